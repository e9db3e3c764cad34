//! Settings: every environment variable startgate reads, parsed and checked before any side
//! effect, with every problem reported at once.
//!
//! Each setting is declared twice, side by side: its name as an `ENV_` constant with its typed
//! default as a `DEFAULT_` constant, and its row in [`SETTINGS`] (name, default as the docs
//! write it, meaning, whether it may hold a secret). The table drives `--help`
//! ([`settings_help`]), the `_FILE` forms of secrets, how a bad value is shown in an error,
//! and the warning for unknown `STARTGATE_*` names; tests check that the parser reads exactly
//! the names of the table and that the documented defaults parse to the typed ones, so help
//! and behaviour cannot drift apart.
//!
//! Rules shared by every variable:
//! - Values are trimmed; a blank value counts as unset (Kubernetes charts often render
//!   `value: ""`), except `STARTGATE_LISTEN` and `STARTGATE_TERMINATION_LOG`, where blank
//!   disables the feature.
//! - Parsing never stops at the first problem (unlike `envy`): each bad value becomes one
//!   [`ConfigError`] naming the variable, the value and what is expected, and the caller gets
//!   them all in [`ConfigErrors`] (exit 2).
//! - `DATABASE_URL`, `STARTGATE_DATABASE_URL` and `STARTGATE_STATUS_TOKEN` may hold secrets:
//!   each may instead be read from the file named by its `_FILE` form (Kubernetes Secret
//!   volumes, Docker secrets), and no error or `Debug` output ever shows their value (a
//!   database URL appears without its password, the token not at all).
//!
//! Nothing here touches the network or spawns a process; the only I/O is reading `_FILE`
//! secrets. Decisions that need the machine (is `/dev/termination-log` writable? is stdout a
//! terminal?) are left to the caller, as the variants [`TerminationLog::Auto`] and
//! [`LogFormat::Auto`] say.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::dburl::DatabaseUrl;
use crate::duration::{HumanDuration, parse_duration};

// ---------------------------------------------------------------------------------------------
// Names and typed defaults, side by side, in the order of DESIGN.md's settings table.
// ---------------------------------------------------------------------------------------------

pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
/// Defaults to `DATABASE_URL`.
pub const ENV_STARTGATE_DATABASE_URL: &str = "STARTGATE_DATABASE_URL";

pub const ENV_MIGRATIONS: &str = "STARTGATE_MIGRATIONS";
pub const DEFAULT_MIGRATIONS: &str = "./migrations";

pub const ENV_MIGRATE_COMMAND: &str = "STARTGATE_MIGRATE_COMMAND";
pub const ENV_MIGRATE_FINGERPRINT: &str = "STARTGATE_MIGRATE_FINGERPRINT";

pub const ENV_ALEMBIC: &str = "STARTGATE_ALEMBIC";
pub const DEFAULT_ALEMBIC: AlembicMode = AlembicMode::Auto;

pub const ENV_ALEMBIC_VERSION_TABLE: &str = "STARTGATE_ALEMBIC_VERSION_TABLE";
pub const DEFAULT_ALEMBIC_VERSION_TABLE: &str = "alembic_version";

pub const ENV_HISTORY_TABLE: &str = "STARTGATE_HISTORY_TABLE";
pub const DEFAULT_HISTORY_SCHEMA: &str = "public";
pub const DEFAULT_HISTORY_TABLE: &str = "startgate_migrations";

/// 0 allowed: one attempt.
pub const ENV_DB_WAIT_TIMEOUT: &str = "STARTGATE_DB_WAIT_TIMEOUT";
pub const DEFAULT_DB_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// 0 allowed: one attempt. Longer than one migration may take, so that a replica that starts
/// during another's long migration waits for it rather than failing.
pub const ENV_LOCK_WAIT_TIMEOUT: &str = "STARTGATE_LOCK_WAIT_TIMEOUT";
pub const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(35 * 60);

/// 0 allowed: PostgreSQL reads 0 as "disabled".
pub const ENV_LOCK_TIMEOUT: &str = "STARTGATE_LOCK_TIMEOUT";
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// 0 allowed: PostgreSQL reads 0 as "disabled".
pub const ENV_STATEMENT_TIMEOUT: &str = "STARTGATE_STATEMENT_TIMEOUT";
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub const ENV_MIGRATION_TIMEOUT: &str = "STARTGATE_MIGRATION_TIMEOUT";
pub const DEFAULT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub const ENV_LOCK_RETRIES: &str = "STARTGATE_LOCK_RETRIES";
pub const DEFAULT_LOCK_RETRIES: u32 = 3;

pub const ENV_OUT_OF_ORDER: &str = "STARTGATE_OUT_OF_ORDER";
pub const DEFAULT_OUT_OF_ORDER: bool = false;

pub const ENV_BACKUP: &str = "STARTGATE_BACKUP";
pub const DEFAULT_BACKUP: BackupMode = BackupMode::Auto;

pub const ENV_BACKUP_DIR: &str = "STARTGATE_BACKUP_DIR";
pub const DEFAULT_BACKUP_DIR: &str = "./startgate-backups";

pub const ENV_BACKUP_KEEP: &str = "STARTGATE_BACKUP_KEEP";
pub const DEFAULT_BACKUP_KEEP: u32 = 10;

pub const ENV_BACKUP_TIMEOUT: &str = "STARTGATE_BACKUP_TIMEOUT";
pub const DEFAULT_BACKUP_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub const ENV_BACKUP_COMMAND: &str = "STARTGATE_BACKUP_COMMAND";

pub const ENV_VERIFY: &str = "STARTGATE_VERIFY";
pub const DEFAULT_VERIFY: VerifyMode = VerifyMode::Subset;

pub const ENV_REQUIRE: &str = "STARTGATE_REQUIRE";
pub const ENV_EXPECT_SCHEMA: &str = "STARTGATE_EXPECT_SCHEMA";

/// Unset: derived from `PORT` (see [`Settings::effective_probe`]).
pub const ENV_PROBE: &str = "STARTGATE_PROBE";

pub const ENV_STARTUP_TIMEOUT: &str = "STARTGATE_STARTUP_TIMEOUT";
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

pub const ENV_PROBE_TIMEOUT: &str = "STARTGATE_PROBE_TIMEOUT";
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub const ENV_PROBE_INTERVAL: &str = "STARTGATE_PROBE_INTERVAL";
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(200);

pub const ENV_KILL_GRACE: &str = "STARTGATE_KILL_GRACE";
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// Unset: wait for the app; the platform enforces its own grace period.
pub const ENV_SHUTDOWN_GRACE: &str = "STARTGATE_SHUTDOWN_GRACE";

pub const ENV_HANG_COMMAND: &str = "STARTGATE_HANG_COMMAND";

/// Blank disables the endpoint.
pub const ENV_LISTEN: &str = "STARTGATE_LISTEN";
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9600);

pub const ENV_STATUS_TOKEN: &str = "STARTGATE_STATUS_TOKEN";

/// Unset: [`DEFAULT_TERMINATION_LOG`] when writable; blank disables it.
pub const ENV_TERMINATION_LOG: &str = "STARTGATE_TERMINATION_LOG";
/// Where the kubelet reads a container's termination message by default.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

pub const ENV_LOG_FORMAT: &str = "STARTGATE_LOG_FORMAT";
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Auto;

pub const ENV_LOG: &str = "STARTGATE_LOG";
pub const DEFAULT_LOG: &str = "info";

/// Render's convention (and common elsewhere) for the port the app listens on; used for the
/// default probe.
pub const ENV_PORT: &str = "PORT";

/// The suffix that turns a secret's name into the name of the variable naming its file.
pub const FILE_SUFFIX: &str = "_FILE";

/// Variables a test harness sets for itself; never warned about.
const TEST_PREFIX: &str = "STARTGATE_TEST_";

/// PostgreSQL keeps `lock_timeout` and `statement_timeout` in milliseconds in an `int`; a
/// larger value would be refused by the server only once migrating has begun.
const POSTGRES_MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// PostgreSQL's identifier limit (NAMEDATALEN - 1); longer names are silently truncated by
/// the server, so two long names could end up naming the same table.
const MAX_IDENTIFIER_BYTES: usize = 63;

// ---------------------------------------------------------------------------------------------
// The table behind `--help`.
// ---------------------------------------------------------------------------------------------

/// One row of the settings documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDoc {
    /// The environment variable.
    pub name: &'static str,
    /// The default as the docs write it: a value, or `—`/`unset` when there is none.
    pub default: &'static str,
    /// What it does, in one or two plain-text sentences.
    pub meaning: &'static str,
    /// May hold a secret: has a `_FILE` form, and its value is never shown.
    pub secret: bool,
}

const fn doc(name: &'static str, default: &'static str, meaning: &'static str) -> SettingDoc {
    SettingDoc {
        name,
        default,
        meaning,
        secret: false,
    }
}

const fn secret(name: &'static str, default: &'static str, meaning: &'static str) -> SettingDoc {
    SettingDoc {
        name,
        default,
        meaning,
        secret: true,
    }
}

/// Every variable startgate reads, in DESIGN.md's order (`PORT`, which DESIGN.md describes
/// under "Probing", comes last).
pub const SETTINGS: &[SettingDoc] = &[
    secret(
        ENV_DATABASE_URL,
        "—",
        "postgres://… or sqlite://PATH; required by every step that touches the database",
    ),
    secret(
        ENV_STARTGATE_DATABASE_URL,
        "DATABASE_URL",
        "a direct connection for migrating when DATABASE_URL goes through a transaction-mode \
         pooler (PgBouncer, Supabase 6543, Neon -pooler), or with a role that may run DDL",
    ),
    doc(
        ENV_MIGRATIONS,
        DEFAULT_MIGRATIONS,
        "directory of migration files",
    ),
    doc(
        ENV_MIGRATE_COMMAND,
        "unset",
        "an existing tool to run as the migration step (e.g. alembic upgrade head), under \
         startgate's lock, backup and timeout",
    ),
    doc(
        ENV_MIGRATE_FINGERPRINT,
        "unset",
        "comma list of paths (e.g. prisma/migrations); when their content and the command are \
         unchanged since the last success recorded in the database, the command is skipped",
    ),
    doc(
        ENV_ALEMBIC,
        "auto",
        "auto: Alembic awareness when an Alembic config is found (-c in the command, \
         ALEMBIC_CONFIG, alembic.ini, or [tool.alembic] in pyproject.toml); off",
    ),
    doc(
        ENV_ALEMBIC_VERSION_TABLE,
        DEFAULT_ALEMBIC_VERSION_TABLE,
        "for projects whose env.py renames it",
    ),
    doc(
        ENV_HISTORY_TABLE,
        DEFAULT_HISTORY_TABLE,
        "history table, optionally schema-qualified (default schema public); an identifier, \
         always quoted, never pasted into SQL",
    ),
    doc(
        ENV_DB_WAIT_TIMEOUT,
        "60s",
        "how long to wait for the database to accept connections (0: one attempt)",
    ),
    doc(
        ENV_LOCK_WAIT_TIMEOUT,
        "35m",
        "how long to wait for another replica's migration lock (longer than one migration may \
         take; 0: one attempt)",
    ),
    doc(
        ENV_LOCK_TIMEOUT,
        "10s",
        "PostgreSQL lock_timeout for every migration statement (0 disables it); on SQLite, \
         how long to wait for another writer (busy_timeout)",
    ),
    doc(
        ENV_STATEMENT_TIMEOUT,
        "10m",
        "PostgreSQL statement_timeout for every migration statement (0 disables it); does not \
         apply to SQLite, where only the wall-clock limit does",
    ),
    doc(
        ENV_MIGRATION_TIMEOUT,
        "30m",
        "wall-clock limit for one migration (or the migrate command)",
    ),
    doc(
        ENV_LOCK_RETRIES,
        "3",
        "retries, with backoff, of a migration that failed on lock_timeout",
    ),
    doc(
        ENV_OUT_OF_ORDER,
        "false",
        "apply a pending migration older than the newest applied one",
    ),
    doc(
        ENV_BACKUP,
        "auto",
        "auto: back up only when something will be applied; always; never",
    ),
    doc(
        ENV_BACKUP_DIR,
        DEFAULT_BACKUP_DIR,
        "where backups go (mode 0600 files); in a container, mount a volume here",
    ),
    doc(
        ENV_BACKUP_KEEP,
        "10",
        "how many backups to keep (at least 1)",
    ),
    doc(
        ENV_BACKUP_TIMEOUT,
        "5m",
        "limit for taking one backup (pg_dump also gets --lock-wait-timeout)",
    ),
    doc(
        ENV_BACKUP_COMMAND,
        "unset",
        "run after a backup is written, {file} replaced by its path (e.g. an upload to object \
         storage); failure counts as a failed backup",
    ),
    doc(
        ENV_VERIFY,
        "subset",
        "subset: missing or changed objects fail, extra ones warn (expand/contract deploys, old \
         replicas); exact: extras fail too",
    ),
    doc(
        ENV_REQUIRE,
        "unset",
        "comma list of table or table.column that must exist after migrating",
    ),
    doc(
        ENV_EXPECT_SCHEMA,
        "unset",
        "path to an expected snapshot (from startgate schema --json)",
    ),
    doc(
        ENV_PROBE,
        "http://localhost:$PORT/ if PORT is set",
        "http://HOST:PORT/PATH (ready on 2xx/3xx), tcp://HOST:PORT, or exec:COMMAND (ready on \
         exit 0); unset with PORT set: http://localhost:$PORT/, ready on any answer below 500; \
         unset without PORT: the app counts as ready once started",
    ),
    doc(
        ENV_STARTUP_TIMEOUT,
        "120s",
        "the app must pass its probe within this",
    ),
    doc(ENV_PROBE_TIMEOUT, "2s", "limit for one probe attempt"),
    doc(ENV_PROBE_INTERVAL, "200ms", "pause between attempts"),
    doc(
        ENV_KILL_GRACE,
        "10s",
        "when startgate itself stops the app (a hang), SIGTERM first, SIGKILL after this",
    ),
    doc(
        ENV_SHUTDOWN_GRACE,
        "unset",
        "after a forwarded SIGTERM/SIGINT, how long to wait before SIGKILL; unset: wait for the \
         app (the platform enforces its own grace period)",
    ),
    doc(
        ENV_HANG_COMMAND,
        "unset",
        "run on a hang, {pid} replaced by the app's pid (e.g. py-spy dump --pid {pid}); its \
         output goes to the log and /status",
    ),
    doc(
        ENV_LISTEN,
        "0.0.0.0:9600",
        "endpoint address (IP:PORT, e.g. [::]:9600); empty disables it",
    ),
    secret(
        ENV_STATUS_TOKEN,
        "unset",
        "when set, /status and /metrics require Authorization: Bearer <token> (probes stay open \
         for the kubelet)",
    ),
    doc(
        ENV_TERMINATION_LOG,
        "/dev/termination-log when writable",
        "where a failure's summary (at most 4 KB) is written; Kubernetes shows it in kubectl \
         describe pod; empty disables it",
    ),
    doc(
        ENV_LOG_FORMAT,
        "auto",
        "json, text; auto is text on a terminal, JSON otherwise",
    ),
    doc(
        ENV_LOG,
        DEFAULT_LOG,
        "log filter (e.g. debug, or info,startgate=debug)",
    ),
    doc(
        ENV_PORT,
        "unset",
        "the port the app listens on (Render's convention); gives the default probe",
    ),
];

/// The row of `name`, if it is a setting.
pub fn setting_doc(name: &str) -> Option<&'static SettingDoc> {
    SETTINGS.iter().find(|d| d.name == name)
}

/// The settings section of `--help` (clap's `after_long_help`): every variable with its
/// default and meaning, aligned, wrapped at 80 columns.
pub fn settings_help() -> String {
    const WIDTH: usize = 80;
    const INDENT: &str = "      ";
    let name_width = SETTINGS.iter().map(|d| d.name.len()).max().unwrap_or(0);
    let mut out = String::from("Settings (environment variables):\n");
    out.push_str(&format!("  {:<name_width$}  DEFAULT\n", "VARIABLE"));
    for doc in SETTINGS {
        out.push_str(&format!("  {:<name_width$}  {}\n", doc.name, doc.default));
        let mut meaning = doc.meaning.to_string();
        if doc.secret {
            meaning.push_str(&format!(
                ". May hold a secret: {}{FILE_SUFFIX} names a file to read it from instead",
                doc.name
            ));
        }
        for line in wrap(&meaning, WIDTH - INDENT.len()) {
            out.push_str(INDENT);
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push('\n');
    for line in wrap(
        "Durations accept 500ms, 10s, 5m, 1h (and sums such as 1h30m). An empty value counts \
         as unset.",
        WIDTH,
    ) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Greedy word wrap; a word longer than `width` gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Typed values.
// ---------------------------------------------------------------------------------------------

/// `STARTGATE_ALEMBIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlembicMode {
    /// Alembic awareness when an Alembic config is found.
    Auto,
    Off,
}

/// `STARTGATE_BACKUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    /// Back up only when something will be applied.
    Auto,
    Always,
    Never,
}

/// `STARTGATE_VERIFY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Missing or changed objects fail; extra ones only warn (expand/contract deploys, old
    /// replicas still running).
    Subset,
    /// Extra objects fail too.
    Exact,
}

/// `STARTGATE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise; decided by the logging setup.
    Auto,
    Json,
    Text,
}

/// A setting with a fixed set of lowercase words.
trait Choice: Sized + Copy + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    fn parse(text: &str) -> Result<Self, String> {
        Self::CHOICES
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(text))
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let words: Vec<&str> = Self::CHOICES.iter().map(|(w, _)| *w).collect();
                format!("expected {}", one_of(&words))
            })
    }
}

impl Choice for AlembicMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("auto", AlembicMode::Auto), ("off", AlembicMode::Off)];
}

impl Choice for BackupMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", BackupMode::Auto),
        ("always", BackupMode::Always),
        ("never", BackupMode::Never),
    ];
}

impl Choice for VerifyMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("subset", VerifyMode::Subset), ("exact", VerifyMode::Exact)];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", LogFormat::Auto),
        ("json", LogFormat::Json),
        ("text", LogFormat::Text),
    ];
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => only.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// `STARTGATE_HISTORY_TABLE`: always quoted as an identifier, never pasted into SQL.
/// SQLite has no schemas; its backend uses only `table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTable {
    pub schema: String,
    pub table: String,
}

impl Default for HistoryTable {
    fn default() -> Self {
        HistoryTable {
            schema: DEFAULT_HISTORY_SCHEMA.to_string(),
            table: DEFAULT_HISTORY_TABLE.to_string(),
        }
    }
}

impl fmt::Display for HistoryTable {
    /// `schema.table`, for messages; SQL quotes each part itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// One item of `STARTGATE_REQUIRE`: a table, or a column of a table, that must exist after
/// migrating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub table: String,
    pub column: Option<String>,
}

impl fmt::Display for Required {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}.{column}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// When an HTTP probe counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpReady {
    /// 2xx or 3xx: an explicit `STARTGATE_PROBE=http://…` names a health endpoint.
    SuccessOrRedirect,
    /// Any answer below 500: the default probe of `/` from `PORT`, where a 404 still proves
    /// the app is serving (an open port alone does not: gunicorn binds before its workers
    /// have imported the app).
    BelowServerError,
}

/// How the app's startup is probed (`STARTGATE_PROBE`, or the default from `PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `http://HOST:PORT/PATH`. `host` is bare (an IPv6 address without brackets); `path`
    /// starts with `/` and includes the query, if any.
    Http {
        host: String,
        port: u16,
        path: String,
        ready: HttpReady,
    },
    /// `tcp://HOST:PORT`: ready when the port accepts a connection.
    Tcp { host: String, port: u16 },
    /// `exec:COMMAND`: ready when the command exits 0.
    Exec { command: String },
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http {
                host, port, path, ..
            } => write!(f, "http://{}:{port}{path}", bracketed(host)),
            Probe::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracketed(host)),
            Probe::Exec { command } => write!(f, "exec:{command}"),
        }
    }
}

/// An IPv6 address gets its brackets back for a URL or `host:port`.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `STARTGATE_TERMINATION_LOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationLog {
    /// Unset: [`DEFAULT_TERMINATION_LOG`] when it is writable (decided where it is written,
    /// so that running outside Kubernetes is not an error).
    Auto,
    /// Set: this file; failing to write it is worth a warning.
    Path(PathBuf),
    /// Set to an empty value.
    Disabled,
}

/// A secret string (the status token). Its `Debug` shows nothing and it has no `Display`, so
/// it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for comparing with what a client sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Settings.
// ---------------------------------------------------------------------------------------------

/// Every setting, parsed and checked. `Debug` is safe to log: secrets print redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `DATABASE_URL`. Optional here because `watch` does no database work; commands that
    /// need it call [`Settings::database_url`].
    pub database_url: Option<DatabaseUrl>,
    /// `STARTGATE_DATABASE_URL` when set explicitly: a direct connection for migrating, and
    /// the `DATABASE_URL` a migrate command gets. [`Settings::migration_database_url`] applies
    /// the fallback to `DATABASE_URL`.
    pub direct_database_url: Option<DatabaseUrl>,
    /// `STARTGATE_MIGRATIONS`: the directory of migration files.
    pub migrations: PathBuf,
    /// Whether `STARTGATE_MIGRATIONS` was set: a missing default `./migrations` is fine when
    /// a migrate command does the migrating, a missing explicit directory is not.
    pub migrations_explicit: bool,
    /// `STARTGATE_MIGRATE_COMMAND`: an existing tool run as the migration step.
    pub migrate_command: Option<String>,
    /// `STARTGATE_MIGRATE_FINGERPRINT`: paths whose content (with the command) decides
    /// whether the migrate command can be skipped; empty when unset.
    pub migrate_fingerprint: Vec<PathBuf>,
    /// `STARTGATE_ALEMBIC`.
    pub alembic: AlembicMode,
    /// `STARTGATE_ALEMBIC_VERSION_TABLE`.
    pub alembic_version_table: String,
    /// `STARTGATE_HISTORY_TABLE`.
    pub history_table: HistoryTable,
    /// `STARTGATE_DB_WAIT_TIMEOUT`: how long to wait for the database to accept a real query;
    /// zero means one attempt.
    pub db_wait_timeout: Duration,
    /// `STARTGATE_LOCK_WAIT_TIMEOUT`: how long to wait for another replica's migration lock;
    /// zero means one attempt.
    pub lock_wait_timeout: Duration,
    /// `STARTGATE_LOCK_TIMEOUT`: PostgreSQL `lock_timeout` per migration statement; zero
    /// disables it. At most `i32::MAX` milliseconds (the server's limit).
    pub lock_timeout: Duration,
    /// `STARTGATE_STATEMENT_TIMEOUT`: PostgreSQL `statement_timeout` per migration
    /// statement; zero disables it. At most `i32::MAX` milliseconds.
    pub statement_timeout: Duration,
    /// `STARTGATE_MIGRATION_TIMEOUT`: wall-clock limit for one migration or the migrate
    /// command; never zero.
    pub migration_timeout: Duration,
    /// `STARTGATE_LOCK_RETRIES`: retries of a migration that failed on `lock_timeout`.
    pub lock_retries: u32,
    /// `STARTGATE_OUT_OF_ORDER`: apply a pending migration older than the newest applied one.
    pub out_of_order: bool,
    /// `STARTGATE_BACKUP`.
    pub backup: BackupMode,
    /// `STARTGATE_BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// `STARTGATE_BACKUP_KEEP`: how many backups to keep; at least 1, so that the backup
    /// just taken is never deleted by the pruning that follows it.
    pub backup_keep: u32,
    /// `STARTGATE_BACKUP_TIMEOUT`: limit for taking one backup; never zero.
    pub backup_timeout: Duration,
    /// `STARTGATE_BACKUP_COMMAND`: run after a backup is written, `{file}` replaced.
    pub backup_command: Option<String>,
    /// `STARTGATE_VERIFY`.
    pub verify: VerifyMode,
    /// `STARTGATE_REQUIRE`: tables and columns that must exist after migrating; empty when
    /// unset.
    pub require: Vec<Required>,
    /// `STARTGATE_EXPECT_SCHEMA`: an expected schema snapshot.
    pub expect_schema: Option<PathBuf>,
    /// `STARTGATE_PROBE` as set; see [`Settings::effective_probe`] for the default.
    pub probe: Option<Probe>,
    /// `STARTGATE_STARTUP_TIMEOUT`: the app must pass its probe within this; never zero.
    pub startup_timeout: Duration,
    /// `STARTGATE_PROBE_TIMEOUT`: limit for one probe attempt; never zero.
    pub probe_timeout: Duration,
    /// `STARTGATE_PROBE_INTERVAL`: pause between attempts; never zero, so a failing probe
    /// cannot spin.
    pub probe_interval: Duration,
    /// `STARTGATE_KILL_GRACE`: SIGTERM to SIGKILL when startgate stops a hung app; never zero.
    pub kill_grace: Duration,
    /// `STARTGATE_SHUTDOWN_GRACE`: after a forwarded SIGTERM/SIGINT, the wait before SIGKILL;
    /// `None` waits for the app. Never zero.
    pub shutdown_grace: Option<Duration>,
    /// `STARTGATE_HANG_COMMAND`: run on a hang, `{pid}` replaced.
    pub hang_command: Option<String>,
    /// `STARTGATE_LISTEN`: the endpoint's address; `None` when set empty (disabled).
    pub listen: Option<SocketAddr>,
    /// `STARTGATE_STATUS_TOKEN`: when set, `/status` and `/metrics` require it as a bearer
    /// token.
    pub status_token: Option<Secret>,
    /// `STARTGATE_TERMINATION_LOG`.
    pub termination_log: TerminationLog,
    /// `STARTGATE_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `STARTGATE_LOG`: a `tracing_subscriber::EnvFilter` directive string, already checked.
    pub log: String,
    /// `PORT`: the app's port (never 0), for the default probe.
    pub port: Option<u16>,
    /// Problems worth telling but not fatal (unknown `STARTGATE_*` names, settings without
    /// effect); the caller logs them once logging is set up.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    /// Every default, as documented; what an empty environment gives.
    fn default() -> Self {
        Settings {
            database_url: None,
            direct_database_url: None,
            migrations: PathBuf::from(DEFAULT_MIGRATIONS),
            migrations_explicit: false,
            migrate_command: None,
            migrate_fingerprint: Vec::new(),
            alembic: DEFAULT_ALEMBIC,
            alembic_version_table: DEFAULT_ALEMBIC_VERSION_TABLE.to_string(),
            history_table: HistoryTable::default(),
            db_wait_timeout: DEFAULT_DB_WAIT_TIMEOUT,
            lock_wait_timeout: DEFAULT_LOCK_WAIT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
            lock_retries: DEFAULT_LOCK_RETRIES,
            out_of_order: DEFAULT_OUT_OF_ORDER,
            backup: DEFAULT_BACKUP,
            backup_dir: PathBuf::from(DEFAULT_BACKUP_DIR),
            backup_keep: DEFAULT_BACKUP_KEEP,
            backup_timeout: DEFAULT_BACKUP_TIMEOUT,
            backup_command: None,
            verify: DEFAULT_VERIFY,
            require: Vec::new(),
            expect_schema: None,
            probe: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            kill_grace: DEFAULT_KILL_GRACE,
            shutdown_grace: None,
            hang_command: None,
            listen: Some(DEFAULT_LISTEN),
            status_token: None,
            termination_log: TerminationLog::Auto,
            log_format: DEFAULT_LOG_FORMAT,
            log: DEFAULT_LOG.to_string(),
            port: None,
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// Reads the process environment. A non-UTF-8 value of a variable startgate reads is an
    /// error naming it; other variables are not looked at.
    pub fn from_env() -> Result<Settings, ConfigErrors> {
        let mut env = BTreeMap::new();
        let mut not_unicode = BTreeSet::new();
        for (key, value) in std::env::vars_os() {
            // Every name startgate reads is ASCII, so a non-UTF-8 name is not one of ours.
            let Ok(key) = key.into_string() else { continue };
            match value.into_string() {
                Ok(value) => {
                    env.insert(key, value);
                }
                Err(_) => {
                    not_unicode.insert(key);
                }
            }
        }
        parse(&env, &not_unicode).0
    }

    /// Builds the settings from a map of variables (tests, and [`Settings::from_env`]).
    pub fn from_map(env: &BTreeMap<String, String>) -> Result<Settings, ConfigErrors> {
        parse(env, &BTreeSet::new()).0
    }

    /// The application's database, or the error for a command that needs one.
    pub fn database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.database_url
            .as_ref()
            .ok_or(ConfigError::DatabaseUrlRequired)
    }

    /// The connection to migrate through: `STARTGATE_DATABASE_URL`, else `DATABASE_URL`.
    pub fn migration_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.direct_database_url
            .as_ref()
            .or(self.database_url.as_ref())
            .ok_or(ConfigError::DatabaseUrlRequired)
    }

    /// Every secret value, in every form it may take in text (a password percent-encoded
    /// and decoded, the status token), for masking what startgate repeats from drivers and
    /// child processes.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = [&self.database_url, &self.direct_database_url]
            .into_iter()
            .flatten()
            .flat_map(DatabaseUrl::secret_forms)
            .chain(self.status_token.as_ref().map(|t| t.expose().to_string()))
            .collect();
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// The probe to run: `STARTGATE_PROBE`, else `http://localhost:$PORT/` (ready below 500)
    /// when `PORT` is set, else `None` (the app counts as ready once started, with a warning).
    pub fn effective_probe(&self) -> Option<Probe> {
        self.probe.clone().or_else(|| {
            self.port.map(|port| Probe::Http {
                host: "localhost".to_string(),
                port,
                path: "/".to_string(),
                ready: HttpReady::BelowServerError,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// One bad setting. No variant holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range. `value` is `None` for secrets (and
    /// then `name` may say which file it came from).
    #[error("{}: {problem}", subject(.name, .value))]
    Invalid {
        name: String,
        value: Option<String>,
        problem: String,
    },
    #[error("{name} and {name}{FILE_SUFFIX} are both set; set only one of them")]
    BothSet { name: String },
    #[error("{file_var}={path:?}: cannot read the file")]
    UnreadableFile {
        file_var: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file_var}={path:?}: the file is empty")]
    EmptyFile { file_var: String, path: PathBuf },
    #[error("{name}: the value is not valid UTF-8")]
    NotUnicode { name: String },
    #[error("DATABASE_URL is required for this command (postgres://… or sqlite://PATH)")]
    DatabaseUrlRequired,
}

fn subject(name: &str, value: &Option<String>) -> String {
    match value {
        Some(value) => format!("{name}={value:?}"),
        None => name.to_string(),
    }
}

/// Every bad setting found, in the order of [`SETTINGS`]. Its `Display` lists one problem per
/// line, each with its cause, so the caller prints it without walking a chain.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} invalid setting{}:", if n == 1 { "" } else { "s" })?;
        for error in &self.0 {
            write!(f, "\n  {}", with_causes(error))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `error: cause: cause…`, one line.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The parser.
// ---------------------------------------------------------------------------------------------

/// Where a value came from, for naming it in an error.
struct Value {
    text: String,
    /// For a secret read through `_FILE`: `NAME_FILE="/path"`, which an error names instead
    /// of the variable the operator did not set.
    origin: Option<String>,
}

/// Looks variables up, records every name it was asked for, and collects the problems.
struct Reader<'a> {
    env: &'a BTreeMap<String, String>,
    not_unicode: &'a BTreeSet<String>,
    errors: Vec<ConfigError>,
    /// Every setting looked up, so a test can hold the parser and [`SETTINGS`] together.
    read: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    /// The raw value of any variable, as set (possibly blank). A non-UTF-8 value is an error
    /// here, since only variables we read get this far.
    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        if self.not_unicode.contains(name) {
            self.errors.push(ConfigError::NotUnicode {
                name: name.to_string(),
            });
            return None;
        }
        self.env.get(name).map(String::as_str)
    }

    fn is_secret(name: &str) -> bool {
        setting_doc(name).is_some_and(|d| d.secret)
    }

    /// The trimmed value of a setting, `None` when unset or blank. For a secret, also its
    /// `_FILE` form.
    fn value(&mut self, name: &'static str) -> Option<Value> {
        self.read.insert(name);
        let direct = self.lookup(name).map(str::trim).filter(|v| !v.is_empty());
        if !Self::is_secret(name) {
            return direct.map(|text| Value {
                text: text.to_string(),
                origin: None,
            });
        }
        let file_var = format!("{name}{FILE_SUFFIX}");
        let file = self
            .lookup(&file_var)
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match (direct, file) {
            (None, None) => None,
            (Some(text), None) => Some(Value {
                text: text.to_string(),
                origin: None,
            }),
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::BothSet {
                    name: name.to_string(),
                });
                None
            }
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                match std::fs::read_to_string(&path) {
                    Ok(content) => {
                        // Files written by `echo` or an editor end with a newline that is
                        // not part of the secret; surrounding spaces are trimmed as for a
                        // value set directly.
                        let text = content.trim();
                        if text.is_empty() {
                            self.errors.push(ConfigError::EmptyFile { file_var, path });
                            return None;
                        }
                        Some(Value {
                            text: text.to_string(),
                            origin: Some(format!("{file_var}={path:?}")),
                        })
                    }
                    Err(source) => {
                        self.errors.push(ConfigError::UnreadableFile {
                            file_var,
                            path,
                            source,
                        });
                        None
                    }
                }
            }
        }
    }

    /// For the settings where blank means "disabled": `None` unset, `Some("")` blank.
    fn value_keep_blank(&mut self, name: &'static str) -> Option<&'a str> {
        self.read.insert(name);
        self.lookup(name).map(str::trim)
    }

    fn invalid(&mut self, name: &'static str, value: &Value, problem: String) {
        let (name, value) = match (&value.origin, Self::is_secret(name)) {
            (Some(origin), _) => (origin.clone(), None),
            (None, true) => (name.to_string(), None),
            (None, false) => (name.to_string(), Some(value.text.clone())),
        };
        self.errors.push(ConfigError::Invalid {
            name,
            value,
            problem,
        });
    }

    /// The parsed value, `None` when unset or bad (and then the problem is recorded).
    fn parse<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.value(name)?;
        match parse(&value.text) {
            Ok(parsed) => Some(parsed),
            Err(problem) => {
                self.invalid(name, &value, problem);
                None
            }
        }
    }

    fn parse_or<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.parse(name, parse).unwrap_or(default)
    }

    fn duration(&mut self, name: &'static str, default: Duration, bound: Bound) -> Duration {
        self.parse_or(name, default, |text| parse_bounded_duration(text, bound))
    }
}

/// What a duration setting accepts besides its syntax.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// A limit or pause that must be positive.
    Positive,
    /// A wait where 0 means one attempt.
    ZeroAllowed,
    /// A PostgreSQL timeout: 0 disables it, and the server keeps milliseconds in an `int`.
    Postgres,
}

fn parse_bounded_duration(text: &str, bound: Bound) -> Result<Duration, String> {
    let duration = parse_duration(text).map_err(|e| e.to_string())?;
    match bound {
        Bound::Positive if duration.is_zero() => Err("must be more than 0".to_string()),
        Bound::Postgres if duration > POSTGRES_MAX_TIMEOUT => Err(format!(
            "must be at most {} (PostgreSQL's limit); 0 disables the timeout",
            HumanDuration(POSTGRES_MAX_TIMEOUT)
        )),
        _ => Ok(duration),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false (or 1/0, yes/no, on/off)".to_string()),
    }
}

fn parse_count(text: &str, min: u32) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err("expected a port number from 1 to 65535".to_string()),
    }
}

/// A shell command: trimmed already; refused when it holds nothing runnable.
fn parse_command(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("expected a command".to_string());
    }
    Ok(text.to_string())
}

/// One PostgreSQL identifier part, to be quoted later. `what` names it in the message.
fn check_identifier(part: &str, what: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("empty {what} name"));
    }
    if part.contains('\0') {
        return Err(format!("the {what} name contains a NUL byte"));
    }
    if part.trim() != part {
        return Err(format!(
            "the {what} name {part:?} has leading or trailing spaces"
        ));
    }
    if part.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "the {what} name {part:?} is longer than {MAX_IDENTIFIER_BYTES} bytes (PostgreSQL's limit)"
        ));
    }
    Ok(())
}

fn parse_history_table(text: &str) -> Result<HistoryTable, String> {
    let parts: Vec<&str> = text.split('.').collect();
    let (schema, table) = match parts.as_slice() {
        [table] => (DEFAULT_HISTORY_SCHEMA, *table),
        [schema, table] => (*schema, *table),
        _ => return Err("expected table or schema.table (at most one dot)".to_string()),
    };
    check_identifier(schema, "schema")?;
    check_identifier(table, "table")?;
    Ok(HistoryTable {
        schema: schema.to_string(),
        table: table.to_string(),
    })
}

fn parse_alembic_version_table(text: &str) -> Result<String, String> {
    check_identifier(text, "table")?;
    Ok(text.to_string())
}

/// Items of a comma list, trimmed; an empty item (`a,,b`, a trailing comma) is refused
/// rather than skipped, since it usually means a name went missing.
fn comma_items(text: &str) -> Result<Vec<&str>, String> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err("empty item in the comma list (a stray comma?)".to_string());
    }
    Ok(items)
}

fn parse_require(text: &str) -> Result<Vec<Required>, String> {
    comma_items(text)?
        .into_iter()
        .map(|item| {
            let parts: Vec<&str> = item.split('.').collect();
            let (table, column) = match parts.as_slice() {
                [table] => (*table, None),
                [table, column] => (*table, Some(*column)),
                _ => return Err(format!("{item:?}: expected table or table.column")),
            };
            check_identifier(table, "table")?;
            if let Some(column) = column {
                check_identifier(column, "column")?;
            }
            Ok(Required {
                table: table.to_string(),
                column: column.map(str::to_string),
            })
        })
        .collect()
}

fn parse_paths(text: &str) -> Result<Vec<PathBuf>, String> {
    Ok(comma_items(text)?.into_iter().map(PathBuf::from).collect())
}

const PROBE_FORMS: &str = "expected http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND";

fn parse_probe(text: &str) -> Result<Probe, String> {
    if let Some((prefix, command)) = text.split_at_checked(5)
        && prefix.eq_ignore_ascii_case("exec:")
    {
        let command = command.trim();
        if command.is_empty() {
            return Err("exec: needs a command, e.g. exec:pg_isready".to_string());
        }
        return Ok(Probe::Exec {
            command: command.to_string(),
        });
    }
    let url = url::Url::parse(text).map_err(|e| format!("{e} ({PROBE_FORMS})"))?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(format!("no host ({PROBE_FORMS})")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the probe URL are not supported".to_string());
    }
    match url.scheme() {
        "http" => {
            let mut path = url.path().to_string();
            if let Some(query) = url.query() {
                path.push('?');
                path.push_str(query);
            }
            Ok(Probe::Http {
                host,
                port: url.port_or_known_default().unwrap_or(80),
                path,
                ready: HttpReady::SuccessOrRedirect,
            })
        }
        "https" => Err(
            "https is not supported: probe the app's plain HTTP port on localhost (TLS is \
             terminated in front of the app)"
                .to_string(),
        ),
        "tcp" => {
            let port = url
                .port()
                .ok_or_else(|| "a tcp probe needs a port: tcp://HOST:PORT".to_string())?;
            if !matches!(url.path(), "" | "/") || url.query().is_some() {
                return Err("a tcp probe has no path: tcp://HOST:PORT".to_string());
            }
            Ok(Probe::Tcp { host, port })
        }
        _ => Err(PROBE_FORMS.to_string()),
    }
}

fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        "expected IP:PORT, e.g. 0.0.0.0:9600, [::]:9600 or 127.0.0.1:0 (empty disables the \
         endpoint)"
            .to_string()
    })
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("invalid log filter: {e} (e.g. info, or info,startgate=debug)"))
}

/// The status token goes into an `Authorization` header: visible ASCII only. The message
/// must not show the token.
fn parse_token(text: &str) -> Result<Secret, String> {
    if text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Secret::new(text))
    } else {
        Err("must be visible ASCII without spaces (the value is not shown)".to_string())
    }
}

fn parse_database_url(text: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(text).map_err(|e| with_causes(&e))
}

/// Parses every setting; returns the result and the names looked up (for the tests).
fn parse(
    env: &BTreeMap<String, String>,
    not_unicode: &BTreeSet<String>,
) -> (Result<Settings, ConfigErrors>, BTreeSet<&'static str>) {
    let mut r = Reader {
        env,
        not_unicode,
        errors: Vec::new(),
        read: BTreeSet::new(),
    };
    let d = Settings::default();
    let mut warnings = Vec::new();

    let database_url = r.parse(ENV_DATABASE_URL, parse_database_url);
    let direct_database_url = r.parse(ENV_STARTGATE_DATABASE_URL, parse_database_url);
    if let (Some(app), Some(direct)) = (&database_url, &direct_database_url)
        && app.backend() != direct.backend()
    {
        r.errors.push(ConfigError::Invalid {
            name: ENV_STARTGATE_DATABASE_URL.to_string(),
            value: None,
            problem: format!(
                "names a {} database but DATABASE_URL names a {} one; both must reach the same \
                 database",
                direct.backend(),
                app.backend()
            ),
        });
    }

    let migrations = r.parse(ENV_MIGRATIONS, |t| Ok(PathBuf::from(t)));
    let migrations_explicit = migrations.is_some();
    let migrate_command = r.parse(ENV_MIGRATE_COMMAND, parse_command);
    let migrate_fingerprint = r.parse_or(ENV_MIGRATE_FINGERPRINT, Vec::new(), parse_paths);
    if !migrate_fingerprint.is_empty() && migrate_command.is_none() {
        warnings.push(format!(
            "{ENV_MIGRATE_FINGERPRINT} has no effect without {ENV_MIGRATE_COMMAND}"
        ));
    }
    let alembic = r.parse_or(ENV_ALEMBIC, d.alembic, AlembicMode::parse);
    let alembic_version_table = r.parse_or(
        ENV_ALEMBIC_VERSION_TABLE,
        d.alembic_version_table,
        parse_alembic_version_table,
    );
    let history_table = r.parse_or(ENV_HISTORY_TABLE, d.history_table, parse_history_table);
    // SQLite has no schemas: its backend takes `public` (the default) and `main` (SQLite's own
    // name for the database) as no schema at all, and nothing else.
    if let Some(url) = direct_database_url.as_ref().or(database_url.as_ref())
        && url.backend() == crate::dburl::Backend::Sqlite
        && !matches!(history_table.schema.as_str(), "public" | "main")
    {
        r.errors.push(ConfigError::Invalid {
            name: ENV_HISTORY_TABLE.to_string(),
            value: Some(format!("{}.{}", history_table.schema, history_table.table)),
            problem: format!(
                "SQLite has no schemas: name the table alone (e.g. {})",
                history_table.table
            ),
        });
    }

    let db_wait_timeout = r.duration(ENV_DB_WAIT_TIMEOUT, d.db_wait_timeout, Bound::ZeroAllowed);
    let lock_wait_timeout = r.duration(
        ENV_LOCK_WAIT_TIMEOUT,
        d.lock_wait_timeout,
        Bound::ZeroAllowed,
    );
    let lock_timeout = r.duration(ENV_LOCK_TIMEOUT, d.lock_timeout, Bound::Postgres);
    let statement_timeout = r.duration(ENV_STATEMENT_TIMEOUT, d.statement_timeout, Bound::Postgres);
    let migration_timeout = r.duration(ENV_MIGRATION_TIMEOUT, d.migration_timeout, Bound::Positive);
    let lock_retries = r.parse_or(ENV_LOCK_RETRIES, d.lock_retries, |t| parse_count(t, 0));
    let out_of_order = r.parse_or(ENV_OUT_OF_ORDER, d.out_of_order, parse_bool);

    let backup = r.parse_or(ENV_BACKUP, d.backup, BackupMode::parse);
    let backup_dir = r.parse_or(ENV_BACKUP_DIR, d.backup_dir, |t| Ok(PathBuf::from(t)));
    let backup_keep = r.parse_or(ENV_BACKUP_KEEP, d.backup_keep, |t| {
        parse_count(t, 1).map_err(|e| format!("{e} (set {ENV_BACKUP}=never to take no backups)"))
    });
    let backup_timeout = r.duration(ENV_BACKUP_TIMEOUT, d.backup_timeout, Bound::Positive);
    let backup_command = r.parse(ENV_BACKUP_COMMAND, parse_command);

    let verify = r.parse_or(ENV_VERIFY, d.verify, VerifyMode::parse);
    let require = r.parse_or(ENV_REQUIRE, Vec::new(), parse_require);
    let expect_schema = r.parse(ENV_EXPECT_SCHEMA, |t| Ok(PathBuf::from(t)));

    let probe = r.parse(ENV_PROBE, parse_probe);
    let startup_timeout = r.duration(ENV_STARTUP_TIMEOUT, d.startup_timeout, Bound::Positive);
    let probe_timeout = r.duration(ENV_PROBE_TIMEOUT, d.probe_timeout, Bound::Positive);
    let probe_interval = r.duration(ENV_PROBE_INTERVAL, d.probe_interval, Bound::Positive);
    let kill_grace = r.duration(ENV_KILL_GRACE, d.kill_grace, Bound::Positive);
    // Zero would turn a forwarded SIGTERM into an immediate SIGKILL, which is never what a
    // graceful shutdown wants; unset already means "wait for the app".
    let shutdown_grace = r.parse(ENV_SHUTDOWN_GRACE, |t| {
        parse_bounded_duration(t, Bound::Positive)
            .map_err(|e| format!("{e} (leave it unset to wait for the app)"))
    });
    let hang_command = r.parse(ENV_HANG_COMMAND, parse_command);

    let listen = match r.value_keep_blank(ENV_LISTEN) {
        None => d.listen,
        Some(text) => parse_listen(text).unwrap_or_else(|problem| {
            r.errors.push(ConfigError::Invalid {
                name: ENV_LISTEN.to_string(),
                value: Some(text.to_string()),
                problem,
            });
            d.listen
        }),
    };
    let status_token = r.parse(ENV_STATUS_TOKEN, parse_token);
    let termination_log = match r.value_keep_blank(ENV_TERMINATION_LOG) {
        None => TerminationLog::Auto,
        Some("") => TerminationLog::Disabled,
        Some(path) => TerminationLog::Path(PathBuf::from(path)),
    };
    let log_format = r.parse_or(ENV_LOG_FORMAT, d.log_format, LogFormat::parse);
    let log = r.parse_or(ENV_LOG, d.log, parse_log_filter);
    warnings.extend(log_level_typos(&log));
    let port = r.parse(ENV_PORT, parse_port);

    warnings.extend(unknown_variables(
        env.keys().chain(not_unicode.iter()).map(String::as_str),
    ));

    let read = std::mem::take(&mut r.read);
    if !r.errors.is_empty() {
        return (Err(ConfigErrors(r.errors)), read);
    }
    let settings = Settings {
        database_url,
        direct_database_url,
        migrations: migrations.unwrap_or(d.migrations),
        migrations_explicit,
        migrate_command,
        migrate_fingerprint,
        alembic,
        alembic_version_table,
        history_table,
        db_wait_timeout,
        lock_wait_timeout,
        lock_timeout,
        statement_timeout,
        migration_timeout,
        lock_retries,
        out_of_order,
        backup,
        backup_dir,
        backup_keep,
        backup_timeout,
        backup_command,
        verify,
        require,
        expect_schema,
        probe,
        startup_timeout,
        probe_timeout,
        probe_interval,
        kill_grace,
        shutdown_grace,
        hang_command,
        listen,
        status_token,
        termination_log,
        log_format,
        log,
        port,
        warnings,
    };
    (Ok(settings), read)
}

/// Every name startgate knows: the settings and the `_FILE` forms of the secret ones.
fn known_names() -> impl Iterator<Item = String> {
    SETTINGS.iter().flat_map(|d| {
        let file = d.secret.then(|| format!("{}{FILE_SUFFIX}", d.name));
        std::iter::once(d.name.to_string()).chain(file)
    })
}

/// A warning for each `STARTGATE_*` variable that is not a setting (a typo silently ignored
/// is the worst kind of misconfiguration), with a suggestion when one name is close.
fn unknown_variables<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let known: Vec<String> = known_names().collect();
    let mut warnings = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        if !name.starts_with("STARTGATE_")
            || name.starts_with(TEST_PREFIX)
            || known.iter().any(|k| k == name)
            || !seen.insert(name)
        {
            continue;
        }
        let mut warning = format!("{name} is not a startgate setting and is ignored");
        if let Some(base) = name.strip_suffix(FILE_SUFFIX)
            && setting_doc(base).is_some()
        {
            let secrets: Vec<&str> = SETTINGS
                .iter()
                .filter(|d| d.secret)
                .map(|d| d.name)
                .collect();
            warning.push_str(&format!(
                "; only {} have a {FILE_SUFFIX} form",
                one_of(&secrets)
            ));
        } else if let Some(suggestion) = closest(name, known.iter().map(String::as_str)) {
            warning.push_str(&format!("; did you mean {suggestion}?"));
        }
        warnings.push(warning);
    }
    warnings
}

/// The one candidate nearest to `name`, when it is near enough to be a typo and no other
/// candidate is as near.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // Two edits catch a dropped, doubled or swapped letter; longer names tolerate three.
    let limit = if name.len() > 24 { 3 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for candidate in candidates {
        let distance = edit_distance(name, candidate);
        match best {
            Some((d, _)) if distance > d => {}
            Some((d, _)) if distance == d => tie = true,
            _ => {
                best = Some((distance, candidate));
                tie = false;
            }
        }
    }
    match best {
        Some((distance, candidate)) if distance <= limit && !tie => Some(candidate),
        _ => None,
    }
}

/// Levenshtein distance over bytes (names are ASCII), with a transposition counting as one
/// edit (`TIMOEUT`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // Three rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `EnvFilter` reads a bare word as a target name, so `STARTGATE_LOG=debgu` is valid and
/// enables everything for a target that does not exist. Warn when a bare word looks like a
/// misspelt level.
fn log_level_typos(filter: &str) -> Vec<String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains(['=', ':', '[']))
        .filter(|d| !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)))
        .filter_map(|d| {
            let lower = d.to_ascii_lowercase();
            closest(&lower, LEVELS.iter().copied()).map(|level| {
                format!(
                    "{ENV_LOG}: {d:?} is read as a target name, not a level; did you mean {level}?"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_map(pairs: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        Settings::from_map(&env(pairs))
    }

    fn ok(pairs: &[(&str, &str)]) -> Settings {
        match parse_map(pairs) {
            Ok(settings) => settings,
            Err(errors) => panic!("{pairs:?} should parse, got:\n{errors}"),
        }
    }

    fn error_text(pairs: &[(&str, &str)]) -> String {
        match parse_map(pairs) {
            Ok(settings) => panic!("{pairs:?} should fail, got {settings:?}"),
            Err(errors) => errors.to_string(),
        }
    }

    /// One variable set to `value` gives the settings that `expected` makes from the
    /// defaults, or an error containing the expected text.
    fn check(name: &str, value: &str, expected: Result<fn(&mut Settings), &str>) {
        match expected {
            Ok(edit) => {
                let mut want = Settings::default();
                edit(&mut want);
                let got = ok(&[(name, value)]);
                assert_eq!(got, want, "{name}={value:?}");
            }
            Err(text) => {
                let errors = error_text(&[(name, value)]);
                assert!(
                    errors.contains(text),
                    "{name}={value:?}: expected {text:?} in\n{errors}"
                );
                assert!(errors.contains(name), "the error names {name}:\n{errors}");
                assert!(errors.starts_with("1 invalid setting:"), "{errors}");
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_empty_environment_gives_every_default() {
        let s = ok(&[]);
        assert_eq!(s, Settings::default());
        assert_eq!(s.database_url, None);
        assert_eq!(s.direct_database_url, None);
        assert_eq!(s.migrations, PathBuf::from("./migrations"));
        assert!(!s.migrations_explicit);
        assert_eq!(s.migrate_command, None);
        assert!(s.migrate_fingerprint.is_empty());
        assert_eq!(s.alembic, AlembicMode::Auto);
        assert_eq!(s.alembic_version_table, "alembic_version");
        assert_eq!(
            s.history_table,
            HistoryTable {
                schema: "public".into(),
                table: "startgate_migrations".into()
            }
        );
        assert_eq!(s.db_wait_timeout, secs(60));
        assert_eq!(s.lock_wait_timeout, secs(35 * 60));
        assert_eq!(s.lock_timeout, secs(10));
        assert_eq!(s.statement_timeout, secs(600));
        assert_eq!(s.migration_timeout, secs(1800));
        assert_eq!(s.lock_retries, 3);
        assert!(!s.out_of_order);
        assert_eq!(s.backup, BackupMode::Auto);
        assert_eq!(s.backup_dir, PathBuf::from("./startgate-backups"));
        assert_eq!(s.backup_keep, 10);
        assert_eq!(s.backup_timeout, secs(300));
        assert_eq!(s.backup_command, None);
        assert_eq!(s.verify, VerifyMode::Subset);
        assert!(s.require.is_empty());
        assert_eq!(s.expect_schema, None);
        assert_eq!(s.probe, None);
        assert_eq!(s.effective_probe(), None);
        assert_eq!(s.startup_timeout, secs(120));
        assert_eq!(s.probe_timeout, secs(2));
        assert_eq!(s.probe_interval, Duration::from_millis(200));
        assert_eq!(s.kill_grace, secs(10));
        assert_eq!(s.shutdown_grace, None);
        assert_eq!(s.hang_command, None);
        assert_eq!(s.listen, Some("0.0.0.0:9600".parse().unwrap()));
        assert_eq!(s.status_token, None);
        assert_eq!(s.termination_log, TerminationLog::Auto);
        assert_eq!(s.log_format, LogFormat::Auto);
        assert_eq!(s.log, "info");
        assert_eq!(s.port, None);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn documented_defaults_parse_to_the_typed_defaults() {
        // Setting every variable to the default its help text shows changes nothing, so the
        // help cannot advertise a default the code does not use.
        let literal: Vec<(&str, &str)> = SETTINGS
            .iter()
            .filter(|d| !matches!(d.default, "—" | "unset" | "DATABASE_URL"))
            .filter(|d| !d.default.contains(' '))
            .map(|d| (d.name, d.default))
            .collect();
        assert!(literal.len() >= 20, "{literal:?}");
        let got = ok(&literal);
        let want = Settings {
            migrations_explicit: true,
            ..Settings::default()
        };
        assert_eq!(got, want);
    }

    #[test]
    fn durations() {
        check(
            ENV_DB_WAIT_TIMEOUT,
            "5m",
            Ok(|s| s.db_wait_timeout = secs(300)),
        );
        check(
            ENV_DB_WAIT_TIMEOUT,
            "0",
            Ok(|s| s.db_wait_timeout = secs(0)),
        );
        check(
            ENV_LOCK_WAIT_TIMEOUT,
            "0s",
            Ok(|s| s.lock_wait_timeout = secs(0)),
        );
        check(
            ENV_LOCK_TIMEOUT,
            "10x",
            Err(r#"STARTGATE_LOCK_TIMEOUT="10x": unknown unit "x" (use ms, s, m or h)"#),
        );
        check(ENV_LOCK_TIMEOUT, "0", Ok(|s| s.lock_timeout = secs(0)));
        check(
            ENV_LOCK_TIMEOUT,
            "1000h",
            Err("must be at most 596h31m23s647ms (PostgreSQL's limit)"),
        );
        check(
            ENV_STATEMENT_TIMEOUT,
            "1h",
            Ok(|s| s.statement_timeout = secs(3600)),
        );
        check(
            ENV_STATEMENT_TIMEOUT,
            "0",
            Ok(|s| s.statement_timeout = secs(0)),
        );
        check(ENV_STATEMENT_TIMEOUT, "30", Err("missing unit after 30"));
        check(
            ENV_MIGRATION_TIMEOUT,
            "2h",
            Ok(|s| s.migration_timeout = secs(7200)),
        );
        check(
            ENV_BACKUP_TIMEOUT,
            "1m30s",
            Ok(|s| s.backup_timeout = secs(90)),
        );
        check(
            ENV_PROBE_INTERVAL,
            "50ms",
            Ok(|s| s.probe_interval = Duration::from_millis(50)),
        );
        check(
            ENV_SHUTDOWN_GRACE,
            "30s",
            Ok(|s| s.shutdown_grace = Some(secs(30))),
        );
        check(ENV_SHUTDOWN_GRACE, "0", Err("must be more than 0"));
        check(
            ENV_STARTUP_TIMEOUT,
            " 5m ",
            Ok(|s| s.startup_timeout = secs(300)),
        );
        for name in [
            ENV_PROBE_TIMEOUT,
            ENV_PROBE_INTERVAL,
            ENV_STARTUP_TIMEOUT,
            ENV_MIGRATION_TIMEOUT,
            ENV_BACKUP_TIMEOUT,
            ENV_KILL_GRACE,
        ] {
            check(name, "0", Err("=\"0\": must be more than 0"));
            check(name, "0ms", Err("must be more than 0"));
        }
    }

    #[test]
    fn choices() {
        check(ENV_BACKUP, "always", Ok(|s| s.backup = BackupMode::Always));
        check(ENV_BACKUP, "NEVER", Ok(|s| s.backup = BackupMode::Never));
        check(
            ENV_BACKUP,
            "sometimes",
            Err(r#"STARTGATE_BACKUP="sometimes": expected auto, always or never"#),
        );
        check(ENV_VERIFY, "exact", Ok(|s| s.verify = VerifyMode::Exact));
        check(ENV_VERIFY, "strict", Err("expected subset or exact"));
        check(ENV_ALEMBIC, "off", Ok(|s| s.alembic = AlembicMode::Off));
        check(ENV_ALEMBIC, "on", Err("expected auto or off"));
        check(
            ENV_LOG_FORMAT,
            "json",
            Ok(|s| s.log_format = LogFormat::Json),
        );
        check(
            ENV_LOG_FORMAT,
            "Text",
            Ok(|s| s.log_format = LogFormat::Text),
        );
        check(ENV_LOG_FORMAT, "pretty", Err("expected auto, json or text"));
    }

    #[test]
    fn booleans_and_counts() {
        for yes in ["true", "TRUE", "1", "yes", "On"] {
            check(ENV_OUT_OF_ORDER, yes, Ok(|s| s.out_of_order = true));
        }
        for no in ["false", "0", "no", "OFF"] {
            check(ENV_OUT_OF_ORDER, no, Ok(|s| s.out_of_order = false));
        }
        check(ENV_OUT_OF_ORDER, "maybe", Err("expected true or false"));
        check(ENV_LOCK_RETRIES, "0", Ok(|s| s.lock_retries = 0));
        check(ENV_LOCK_RETRIES, "7", Ok(|s| s.lock_retries = 7));
        check(ENV_LOCK_RETRIES, "-1", Err("expected a whole number"));
        check(ENV_LOCK_RETRIES, "three", Err("expected a whole number"));
        check(ENV_BACKUP_KEEP, "1", Ok(|s| s.backup_keep = 1));
        check(
            ENV_BACKUP_KEEP,
            "0",
            Err("must be at least 1 (set STARTGATE_BACKUP=never to take no backups)"),
        );
        check(ENV_PORT, "8080", Ok(|s| s.port = Some(8080)));
        check(ENV_PORT, "0", Err("expected a port number from 1 to 65535"));
        check(
            ENV_PORT,
            "65536",
            Err("expected a port number from 1 to 65535"),
        );
        check(ENV_PORT, "http", Err(r#"PORT="http""#));
    }

    #[test]
    fn paths_commands_and_filters() {
        check(
            ENV_MIGRATIONS,
            "db/migrations",
            Ok(|s| {
                s.migrations = "db/migrations".into();
                s.migrations_explicit = true;
            }),
        );
        check(
            ENV_MIGRATIONS,
            "./migrations",
            Ok(|s| s.migrations_explicit = true),
        );
        check(
            ENV_BACKUP_DIR,
            "/backups",
            Ok(|s| s.backup_dir = "/backups".into()),
        );
        check(
            ENV_EXPECT_SCHEMA,
            "schema.json",
            Ok(|s| s.expect_schema = Some("schema.json".into())),
        );
        check(
            ENV_MIGRATE_COMMAND,
            "alembic upgrade head",
            Ok(|s| s.migrate_command = Some("alembic upgrade head".into())),
        );
        check(
            ENV_BACKUP_COMMAND,
            "aws s3 cp {file} s3://b/",
            Ok(|s| s.backup_command = Some("aws s3 cp {file} s3://b/".into())),
        );
        check(
            ENV_HANG_COMMAND,
            "py-spy dump --pid {pid}",
            Ok(|s| s.hang_command = Some("py-spy dump --pid {pid}".into())),
        );
        check(ENV_LOG, "debug", Ok(|s| s.log = "debug".into()));
        check(
            ENV_LOG,
            "info,startgate=debug,sqlx=warn",
            Ok(|s| s.log = "info,startgate=debug,sqlx=warn".into()),
        );
        check(ENV_LOG, "startgate=loud", Err("invalid log filter"));
        check(
            ENV_ALEMBIC_VERSION_TABLE,
            "my_versions",
            Ok(|s| s.alembic_version_table = "my_versions".into()),
        );
        check(
            ENV_ALEMBIC_VERSION_TABLE,
            &"v".repeat(64),
            Err("longer than 63 bytes"),
        );
    }

    #[test]
    fn fingerprint_paths() {
        let s = ok(&[
            (ENV_MIGRATE_COMMAND, "npx prisma migrate deploy"),
            (
                ENV_MIGRATE_FINGERPRINT,
                " prisma/migrations , prisma/schema.prisma",
            ),
        ]);
        assert_eq!(
            s.migrate_fingerprint,
            vec![
                PathBuf::from("prisma/migrations"),
                PathBuf::from("prisma/schema.prisma")
            ]
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        check(ENV_MIGRATE_FINGERPRINT, "a,,b", Err("empty item"));
        let alone = ok(&[(ENV_MIGRATE_FINGERPRINT, "prisma")]);
        assert_eq!(
            alone.warnings,
            ["STARTGATE_MIGRATE_FINGERPRINT has no effect without STARTGATE_MIGRATE_COMMAND"]
        );
    }

    fn check_history(value: &str, expected: Result<(&str, &str), &str>) {
        match expected {
            Ok((schema, table)) => assert_eq!(
                parse_history_table(value),
                Ok(HistoryTable {
                    schema: schema.into(),
                    table: table.into()
                }),
                "{value:?}"
            ),
            Err(text) => {
                let err = parse_history_table(value).unwrap_err();
                assert!(err.contains(text), "{value:?}: {err}");
            }
        }
    }

    #[test]
    fn history_table() {
        check_history(
            "startgate_migrations",
            Ok(("public", "startgate_migrations")),
        );
        check_history("ops.history", Ok(("ops", "history")));
        check_history("Weird Name", Ok(("public", "Weird Name")));
        check_history(&"t".repeat(63), Ok(("public", &"t".repeat(63))));
        check_history(&"t".repeat(64), Err("longer than 63 bytes"));
        check_history("a.b.c", Err("at most one dot"));
        check_history(".table", Err("empty schema name"));
        check_history("schema.", Err("empty table name"));
        check_history("a\0b", Err("NUL"));
        check_history("ops. history", Err("leading or trailing spaces"));
        check(
            ENV_HISTORY_TABLE,
            "ops.history",
            Ok(|s| {
                s.history_table = HistoryTable {
                    schema: "ops".into(),
                    table: "history".into(),
                }
            }),
        );
        check(
            ENV_HISTORY_TABLE,
            "a.b.c",
            Err(r#"STARTGATE_HISTORY_TABLE="a.b.c""#),
        );
    }

    fn check_require(value: &str, expected: Result<&[(&str, Option<&str>)], &str>) {
        let got = parse_require(value);
        match expected {
            Ok(items) => {
                let want: Vec<Required> = items
                    .iter()
                    .map(|(t, c)| Required {
                        table: t.to_string(),
                        column: c.map(str::to_string),
                    })
                    .collect();
                assert_eq!(got, Ok(want), "{value:?}");
            }
            Err(text) => {
                let err = got.unwrap_err();
                assert!(err.contains(text), "{value:?}: {err}");
            }
        }
    }

    #[test]
    fn require() {
        check_require("users", Ok(&[("users", None)]));
        check_require(
            " users , orders.total,orders.id ",
            Ok(&[
                ("users", None),
                ("orders", Some("total")),
                ("orders", Some("id")),
            ]),
        );
        check_require("users,", Err("empty item"));
        check_require("users,,orders", Err("empty item"));
        check_require("a.b.c", Err(r#""a.b.c": expected table or table.column"#));
        check_require("users.", Err("empty column name"));
        check_require(".id", Err("empty table name"));
        check(
            ENV_REQUIRE,
            "users.email",
            Ok(|s| {
                s.require = vec![Required {
                    table: "users".into(),
                    column: Some("email".into()),
                }]
            }),
        );
        check(
            ENV_REQUIRE,
            "users,",
            Err(r#"STARTGATE_REQUIRE="users,": empty item"#),
        );
    }

    fn http(host: &str, port: u16, path: &str) -> Probe {
        Probe::Http {
            host: host.into(),
            port,
            path: path.into(),
            ready: HttpReady::SuccessOrRedirect,
        }
    }

    fn check_probe(value: &str, expected: Result<Probe, &str>) {
        match expected {
            Ok(probe) => assert_eq!(parse_probe(value), Ok(probe), "{value:?}"),
            Err(text) => {
                let err = parse_probe(value).unwrap_err();
                assert!(err.contains(text), "{value:?}: {err}");
            }
        }
    }

    #[test]
    fn probe() {
        check_probe(
            "http://localhost:8000/healthz",
            Ok(http("localhost", 8000, "/healthz")),
        );
        check_probe("http://app", Ok(http("app", 80, "/")));
        check_probe(
            "http://127.0.0.1:3000/ready?full=1",
            Ok(http("127.0.0.1", 3000, "/ready?full=1")),
        );
        check_probe("http://[::1]:8080/", Ok(http("::1", 8080, "/")));
        check_probe(
            "tcp://localhost:5432",
            Ok(Probe::Tcp {
                host: "localhost".into(),
                port: 5432,
            }),
        );
        check_probe(
            "tcp://[::1]:6379/",
            Ok(Probe::Tcp {
                host: "::1".into(),
                port: 6379,
            }),
        );
        check_probe(
            "exec:curl -fsS localhost:8000/health",
            Ok(Probe::Exec {
                command: "curl -fsS localhost:8000/health".into(),
            }),
        );
        check_probe("exec:", Err("exec: needs a command"));
        check_probe("exec:   ", Err("exec: needs a command"));
        check_probe(
            "https://localhost:8443/",
            Err("probe the app's plain HTTP port on localhost"),
        );
        check_probe("tcp://localhost", Err("a tcp probe needs a port"));
        check_probe("tcp://localhost:80/x", Err("a tcp probe has no path"));
        check_probe("grpc://localhost:50051", Err(PROBE_FORMS));
        check_probe("localhost:8080", Err(PROBE_FORMS));
        check_probe("ex€c:x", Err(PROBE_FORMS));
        check_probe("http://localhost:99999/", Err("invalid port number"));
        check_probe("http://user:pw@localhost/", Err("credentials"));

        assert_eq!(http("::1", 8080, "/x").to_string(), "http://[::1]:8080/x");
        check(
            ENV_PROBE,
            "tcp://db:5432",
            Ok(|s| {
                s.probe = Some(Probe::Tcp {
                    host: "db".into(),
                    port: 5432,
                })
            }),
        );
        check(ENV_PROBE, "ftp://x", Err(r#"STARTGATE_PROBE="ftp://x""#));
    }

    #[test]
    fn default_probe_comes_from_port() {
        let s = ok(&[(ENV_PORT, "10000")]);
        assert_eq!(s.probe, None);
        assert_eq!(
            s.effective_probe(),
            Some(Probe::Http {
                host: "localhost".into(),
                port: 10000,
                path: "/".into(),
                ready: HttpReady::BelowServerError,
            })
        );
        let explicit = ok(&[(ENV_PORT, "10000"), (ENV_PROBE, "http://localhost:9/h")]);
        assert_eq!(explicit.effective_probe(), Some(http("localhost", 9, "/h")));
    }

    #[test]
    fn listen() {
        check(
            ENV_LISTEN,
            "127.0.0.1:0",
            Ok(|s| s.listen = Some("127.0.0.1:0".parse().unwrap())),
        );
        check(
            ENV_LISTEN,
            "[::]:9600",
            Ok(|s| s.listen = Some("[::]:9600".parse().unwrap())),
        );
        check(ENV_LISTEN, "", Ok(|s| s.listen = None));
        check(ENV_LISTEN, "  ", Ok(|s| s.listen = None));
        check(ENV_LISTEN, "localhost:9600", Err("expected IP:PORT"));
        check(ENV_LISTEN, "9600", Err(r#"STARTGATE_LISTEN="9600""#));
        check(ENV_LISTEN, "0.0.0.0:70000", Err("expected IP:PORT"));
    }

    #[test]
    fn termination_log() {
        check(
            ENV_TERMINATION_LOG,
            "/tmp/term.log",
            Ok(|s| s.termination_log = TerminationLog::Path("/tmp/term.log".into())),
        );
        check(
            ENV_TERMINATION_LOG,
            "",
            Ok(|s| s.termination_log = TerminationLog::Disabled),
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        // Every setting set to "" (as a Helm chart renders an unset value) gives the
        // defaults, except the two where empty means "disabled".
        let blank: Vec<(&str, &str)> = SETTINGS.iter().map(|d| (d.name, "")).collect();
        let s = ok(&blank);
        let want = Settings {
            listen: None,
            termination_log: TerminationLog::Disabled,
            ..Settings::default()
        };
        assert_eq!(s, want);
        // Blank `_FILE` forms are unset too, and do not conflict with the variable.
        let s = ok(&[
            ("DATABASE_URL", "postgres://app@db/app"),
            ("DATABASE_URL_FILE", ""),
            ("STARTGATE_STATUS_TOKEN_FILE", " "),
        ]);
        assert_eq!(
            s.database_url().unwrap().redacted(),
            "postgres://app@db/app"
        );
        assert_eq!(s.status_token, None);
    }

    #[test]
    fn a_sqlite_history_table_has_no_schema() {
        let s = ok(&[
            ("DATABASE_URL", "sqlite://app.db"),
            (ENV_HISTORY_TABLE, "main.history"),
        ]);
        assert_eq!(s.history_table.table, "history");
        let err = error_text(&[
            ("DATABASE_URL", "sqlite://app.db"),
            (ENV_HISTORY_TABLE, "ops.history"),
        ]);
        assert!(
            err.contains(
                r#"STARTGATE_HISTORY_TABLE="ops.history": SQLite has no schemas: name the table alone (e.g. history)"#
            ),
            "{err}"
        );
        ok(&[
            ("DATABASE_URL", "postgres://app@db/app"),
            (ENV_HISTORY_TABLE, "ops.history"),
        ]);
    }

    #[test]
    fn database_urls() {
        let s = ok(&[("DATABASE_URL", "postgres://app:pw@pooler:6543/app")]);
        assert_eq!(s.database_url().unwrap().port(), Some(6543));
        assert_eq!(s.direct_database_url, None);
        assert_eq!(s.migration_database_url().unwrap().port(), Some(6543));

        let s = ok(&[
            ("DATABASE_URL", "postgres://app:pw@pooler:6543/app"),
            ("STARTGATE_DATABASE_URL", "postgres://owner:pw@db:5432/app"),
        ]);
        assert_eq!(s.database_url().unwrap().port(), Some(6543));
        assert_eq!(s.migration_database_url().unwrap().port(), Some(5432));

        let s = ok(&[]);
        let err = s.database_url().unwrap_err().to_string();
        assert_eq!(
            err,
            "DATABASE_URL is required for this command (postgres://… or sqlite://PATH)"
        );
        assert!(s.migration_database_url().is_err());

        let err = error_text(&[("DATABASE_URL", "mysql://app:pw@db/app")]);
        assert!(
            err.contains(r#"DATABASE_URL: unsupported scheme "mysql""#),
            "{err}"
        );
        let err = error_text(&[
            ("DATABASE_URL", "postgres://app@db/app"),
            ("STARTGATE_DATABASE_URL", "sqlite://app.db"),
        ]);
        assert!(
            err.contains("STARTGATE_DATABASE_URL: names a sqlite database but DATABASE_URL names a postgres one"),
            "{err}"
        );
    }

    #[test]
    fn secrets_for_masking() {
        let s = ok(&[
            ("DATABASE_URL", "postgres://app:p%40ss@pooler:6543/app"),
            ("STARTGATE_DATABASE_URL", "postgres://owner:direct@db/app"),
            (ENV_STATUS_TOKEN, "tok3n"),
        ]);
        assert_eq!(s.secrets(), ["direct", "p%40ss", "p@ss", "tok3n"]);
        assert!(ok(&[]).secrets().is_empty());
    }

    #[test]
    fn status_token() {
        let s = ok(&[(ENV_STATUS_TOKEN, "s3cr3t-t0ken")]);
        assert_eq!(
            s.status_token.as_ref().map(Secret::expose),
            Some("s3cr3t-t0ken")
        );
        let err = error_text(&[(ENV_STATUS_TOKEN, "has space-s3cr3t")]);
        assert!(
            err.contains("STARTGATE_STATUS_TOKEN: must be visible ASCII"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    #[test]
    fn file_forms_of_secrets() {
        let url = secret_file("postgres://app:filepw@db/app\r\n");
        let direct = secret_file("postgres://owner:filepw2@db:5432/app\n");
        let token = secret_file("tok3n\n\n");
        let path = |f: &tempfile::NamedTempFile| f.path().to_str().unwrap().to_string();
        let s = ok(&[
            ("DATABASE_URL_FILE", &path(&url)),
            ("STARTGATE_DATABASE_URL_FILE", &path(&direct)),
            ("STARTGATE_STATUS_TOKEN_FILE", &path(&token)),
        ]);
        let db = s.database_url().unwrap();
        assert_eq!(db.expose(), "postgres://app:filepw@db/app");
        assert_eq!(db.password().as_deref(), Some("filepw"));
        assert_eq!(
            s.migration_database_url().unwrap().expose(),
            "postgres://owner:filepw2@db:5432/app"
        );
        assert_eq!(s.status_token.unwrap().expose(), "tok3n");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn file_form_errors() {
        let url = secret_file("postgres://app:filepw@db/app\n");
        let url_path = url.path().to_str().unwrap().to_string();

        let err = error_text(&[
            ("DATABASE_URL", "postgres://app:envpw@db/app"),
            ("DATABASE_URL_FILE", &url_path),
        ]);
        assert!(
            err.contains("DATABASE_URL and DATABASE_URL_FILE are both set"),
            "{err}"
        );

        let missing = "/nonexistent/startgate-test/token";
        let err = error_text(&[("STARTGATE_STATUS_TOKEN_FILE", missing)]);
        assert!(
            err.contains(&format!(
                "STARTGATE_STATUS_TOKEN_FILE=\"{missing}\": cannot read the file: "
            )),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");

        let empty = secret_file("\n");
        let empty_path = empty.path().to_str().unwrap().to_string();
        let err = error_text(&[("DATABASE_URL_FILE", &empty_path)]);
        assert!(err.contains("the file is empty"), "{err}");

        // A bad value from a file names the file, not the content.
        let bad = secret_file("mysql://app:filepw@db/app\n");
        let bad_path = bad.path().to_str().unwrap().to_string();
        let err = error_text(&[("DATABASE_URL_FILE", &bad_path)]);
        assert!(
            err.contains(&format!(
                "DATABASE_URL_FILE=\"{bad_path}\": unsupported scheme \"mysql\""
            )),
            "{err}"
        );
        assert!(!err.contains("filepw"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let pw = "Sup3rS3cretPw";
        let token = "T0kenV4lue";
        let good = ok(&[
            (
                "DATABASE_URL",
                &format!("postgres://app:{pw}@db/app?sslmode=require"),
            ),
            (
                "STARTGATE_DATABASE_URL",
                &format!("postgres://owner@db/app?password={pw}"),
            ),
            (ENV_STATUS_TOKEN, token),
        ]);
        for text in [format!("{good:?}"), format!("{good:#?}")] {
            assert!(!text.contains(pw), "{text}");
            assert!(!text.contains(token), "{text}");
            assert!(
                text.contains("postgres://app@db/app?sslmode=require"),
                "{text}"
            );
        }

        let file = secret_file(&format!("postgres://app:{pw}@db:99999/app\n"));
        let file_path = file.path().to_str().unwrap().to_string();
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![("DATABASE_URL", format!("postgres://app:{pw}@db:99999/app"))],
            vec![("DATABASE_URL", format!("mysql://app:{pw}@db/app"))],
            vec![("DATABASE_URL", format!("app:{pw}"))],
            vec![("DATABASE_URL", pw.to_string())],
            vec![(
                "STARTGATE_DATABASE_URL",
                format!("postgres://a:{pw}@h1,h2/app"),
            )],
            vec![("STARTGATE_DATABASE_URL_FILE", file_path.clone())],
            vec![
                ("DATABASE_URL", format!("postgres://app:{pw}@db/app")),
                ("DATABASE_URL_FILE", file_path.clone()),
            ],
            vec![
                ("DATABASE_URL", format!("postgres://app:{pw}@db/app")),
                ("STARTGATE_DATABASE_URL", format!("sqlite://{pw}.db")),
            ],
            vec![(ENV_STATUS_TOKEN, format!("{token} with spaces"))],
        ];
        for case in cases {
            let pairs: Vec<(&str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let errors = parse_map(&pairs).unwrap_err();
            for text in [
                errors.to_string(),
                format!("{errors:?}"),
                format!("{errors:#?}"),
            ] {
                assert!(!text.contains(pw), "{pairs:?} leaks:\n{text}");
                assert!(!text.contains(token), "{pairs:?} leaks:\n{text}");
            }
        }
    }

    #[test]
    fn every_bad_setting_is_reported_together() {
        let errors = parse_map(&[
            (ENV_LOCK_TIMEOUT, "10x"),
            (ENV_BACKUP, "sometimes"),
            (ENV_PROBE, "https://localhost/"),
            (ENV_LISTEN, "nowhere"),
            (ENV_BACKUP_KEEP, "0"),
            (ENV_PORT, "eighty"),
            ("DATABASE_URL", "mysql://db/app"),
        ])
        .unwrap_err();
        assert_eq!(errors.0.len(), 7, "{errors}");
        let text = errors.to_string();
        assert!(text.starts_with("7 invalid settings:\n  "), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        for name in [
            ENV_LOCK_TIMEOUT,
            ENV_BACKUP,
            ENV_PROBE,
            ENV_LISTEN,
            ENV_BACKUP_KEEP,
            ENV_PORT,
            ENV_DATABASE_URL,
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(
            text.contains(r#"STARTGATE_LOCK_TIMEOUT="10x": unknown unit "x" (use ms, s, m or h)"#),
            "{text}"
        );
        assert!(
            text.contains(r#"STARTGATE_BACKUP="sometimes": expected auto, always or never"#),
            "{text}"
        );
    }

    #[test]
    fn non_unicode_values_of_our_variables_are_errors() {
        let not_unicode: BTreeSet<String> = ["STARTGATE_LOG", "DATABASE_URL_FILE", "OTHER_VAR"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errors = parse(&BTreeMap::new(), &not_unicode).0.unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("STARTGATE_LOG: the value is not valid UTF-8"),
            "{text}"
        );
        assert!(
            text.contains("DATABASE_URL_FILE: the value is not valid UTF-8"),
            "{text}"
        );
        assert!(!text.contains("OTHER_VAR"), "{text}");
        assert_eq!(errors.0.len(), 2, "{text}");
    }

    #[test]
    fn unknown_variables_are_warned_about() {
        let s = ok(&[
            ("STARTGATE_LOCK_TIMOUT", "5s"),
            ("STARTGATE_PROBE_INTERVALL", "1s"),
            ("STARTGATE_DATABSE_URL_FILE", "/x"),
            ("STARTGATE_LOG_FILE", "/x"),
            ("STARTGATE_FROBNICATE", "1"),
            ("STARTGATE_TEST_FIXTURE", "1"),
            ("DATABASE_URL_FILE", ""),
            ("STARTGATE_STATUS_TOKEN_FILE", ""),
            ("HOME", "/root"),
        ]);
        assert_eq!(
            s.warnings,
            [
                "STARTGATE_DATABSE_URL_FILE is not a startgate setting and is ignored; did you mean STARTGATE_DATABASE_URL_FILE?",
                "STARTGATE_FROBNICATE is not a startgate setting and is ignored",
                "STARTGATE_LOCK_TIMOUT is not a startgate setting and is ignored; did you mean STARTGATE_LOCK_TIMEOUT?",
                "STARTGATE_LOG_FILE is not a startgate setting and is ignored; only DATABASE_URL, STARTGATE_DATABASE_URL or STARTGATE_STATUS_TOKEN have a _FILE form",
                "STARTGATE_PROBE_INTERVALL is not a startgate setting and is ignored; did you mean STARTGATE_PROBE_INTERVAL?",
            ]
        );
        // Unknown variables are never errors.
        assert_eq!(s.lock_timeout, DEFAULT_LOCK_TIMEOUT);
    }

    #[test]
    fn suggestions() {
        fn check_closest(name: &str, expected: Option<&str>) {
            let known: Vec<String> = known_names().collect();
            assert_eq!(
                closest(name, known.iter().map(String::as_str)),
                expected,
                "{name}"
            );
        }
        check_closest("STARTGATE_LOCK_TIMOUT", Some("STARTGATE_LOCK_TIMEOUT"));
        check_closest("STARTGATE_LOCK_TIMEOTU", Some("STARTGATE_LOCK_TIMEOUT"));
        check_closest("STARTGATE_MIGRATION", Some("STARTGATE_MIGRATIONS"));
        check_closest("STARTGATE_LISTEN_ADDR", None);
        check_closest("STARTGATE_NOTHING_LIKE_IT", None);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn log_level_typo_warning() {
        let s = ok(&[(ENV_LOG, "debgu")]);
        assert_eq!(
            s.warnings,
            ["STARTGATE_LOG: \"debgu\" is read as a target name, not a level; did you mean debug?"]
        );
        assert!(ok(&[(ENV_LOG, "startgate")]).warnings.is_empty());
        assert!(ok(&[(ENV_LOG, "WARN,startgate=trace")]).warnings.is_empty());
    }

    #[test]
    fn the_parser_reads_exactly_the_documented_names() {
        let (_, read) = parse(&BTreeMap::new(), &BTreeSet::new());
        let documented: BTreeSet<&str> = SETTINGS.iter().map(|d| d.name).collect();
        assert_eq!(read, documented);
        assert_eq!(documented.len(), SETTINGS.len(), "a name is listed twice");
        let secrets: Vec<&str> = SETTINGS
            .iter()
            .filter(|d| d.secret)
            .map(|d| d.name)
            .collect();
        assert_eq!(
            secrets,
            [
                "DATABASE_URL",
                "STARTGATE_DATABASE_URL",
                "STARTGATE_STATUS_TOKEN"
            ]
        );
    }

    #[test]
    fn settings_follow_the_design_order() {
        let names: Vec<&str> = SETTINGS.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "DATABASE_URL",
                "STARTGATE_DATABASE_URL",
                "STARTGATE_MIGRATIONS",
                "STARTGATE_MIGRATE_COMMAND",
                "STARTGATE_MIGRATE_FINGERPRINT",
                "STARTGATE_ALEMBIC",
                "STARTGATE_ALEMBIC_VERSION_TABLE",
                "STARTGATE_HISTORY_TABLE",
                "STARTGATE_DB_WAIT_TIMEOUT",
                "STARTGATE_LOCK_WAIT_TIMEOUT",
                "STARTGATE_LOCK_TIMEOUT",
                "STARTGATE_STATEMENT_TIMEOUT",
                "STARTGATE_MIGRATION_TIMEOUT",
                "STARTGATE_LOCK_RETRIES",
                "STARTGATE_OUT_OF_ORDER",
                "STARTGATE_BACKUP",
                "STARTGATE_BACKUP_DIR",
                "STARTGATE_BACKUP_KEEP",
                "STARTGATE_BACKUP_TIMEOUT",
                "STARTGATE_BACKUP_COMMAND",
                "STARTGATE_VERIFY",
                "STARTGATE_REQUIRE",
                "STARTGATE_EXPECT_SCHEMA",
                "STARTGATE_PROBE",
                "STARTGATE_STARTUP_TIMEOUT",
                "STARTGATE_PROBE_TIMEOUT",
                "STARTGATE_PROBE_INTERVAL",
                "STARTGATE_KILL_GRACE",
                "STARTGATE_SHUTDOWN_GRACE",
                "STARTGATE_HANG_COMMAND",
                "STARTGATE_LISTEN",
                "STARTGATE_STATUS_TOKEN",
                "STARTGATE_TERMINATION_LOG",
                "STARTGATE_LOG_FORMAT",
                "STARTGATE_LOG",
                "PORT",
            ]
        );
    }

    #[test]
    fn help_lists_every_variable() {
        let help = settings_help();
        assert!(
            help.starts_with("Settings (environment variables):\n"),
            "{help}"
        );
        for doc in SETTINGS {
            let line = help
                .lines()
                .find(|l| l.split_whitespace().next() == Some(doc.name))
                .unwrap_or_else(|| panic!("{} missing from\n{help}", doc.name));
            assert!(line.trim_end().ends_with(doc.default), "{line:?}");
            if doc.secret {
                let flowed = help.split_whitespace().collect::<Vec<_>>().join(" ");
                let note = format!("{}_FILE names a file", doc.name);
                assert!(flowed.contains(&note), "{help}");
            }
        }
        // Aligned: every default starts in the same column.
        let column = |l: &str| {
            l.find("  ")
                .map(|i| i + l[i..].len() - l[i..].trim_start().len())
        };
        let columns: BTreeSet<Option<usize>> = help
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("      "))
            .map(|l| column(&l[2..]))
            .collect();
        assert_eq!(columns.len(), 1, "{help}");
        assert!(help.lines().all(|l| l.chars().count() <= 80), "{help}");
    }
}
