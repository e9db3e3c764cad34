//! What `status` prints: the plan as a readable table, or with `--json` as a stable document
//! (fields in a fixed order, migrations sorted by version, no maps), meant for scripts and CI.
//!
//! Pure: built from the plan, the database description and the settings; printing is the
//! caller's job. The exit status is part of the report, so the JSON says what the process will
//! return.

use serde::Serialize;

use crate::backend::DatabaseInfo;
use crate::exit::code;
use crate::migrate::plan::{Plan, State, Step};
use crate::migrate::{Migration, RowState};

/// The `status` document. Field order is the JSON order; keep it stable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// `up-to-date`, `pending` or `inconsistent`.
    pub status: &'static str,
    pub exit_code: u8,
    pub database: DatabaseJson,
    pub history_table: String,
    pub migrations_dir: String,
    /// The newest applied version.
    pub current_version: Option<String>,
    pub summary: Summary,
    /// What `init` would do, in order: `apply 0004_x.sql`, `resume 0007_y.sql at statement 3`.
    pub next: Vec<String>,
    pub migrations: Vec<MigrationJson>,
    /// Why `init` would refuse to apply anything (exit 7).
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// Schema differences that fail verification (exit 8 when nothing else is due), checked
    /// against `STARTGATE_REQUIRE` / `STARTGATE_EXPECT_SCHEMA`, and INVALID indexes always.
    pub drift: Vec<String>,
    /// Differences that only warn (extra objects under `STARTGATE_VERIFY=subset`).
    pub drift_warnings: Vec<String>,
    /// The migrate command (`STARTGATE_MIGRATE_COMMAND`), when one is set.
    pub command: Option<CommandJson>,
}

/// The migrate command as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandJson {
    /// The command, secrets masked.
    pub command: String,
    /// What `init` would do with it: `run` (something is pending), `skip`, or `always` (it
    /// runs on every start: no Alembic project, no fingerprint; that is not "pending").
    pub next: &'static str,
    /// Why: `2 Alembic revisions pending`, `unchanged since its last success`…
    pub detail: String,
    pub alembic: Option<AlembicJson>,
}

/// An Alembic project against its version table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlembicJson {
    /// The config file it was found through.
    pub config: String,
    pub version_table: String,
    /// The version table's rows.
    pub current: Vec<String>,
    pub heads: Vec<String>,
    /// Revisions not applied yet.
    pub pending: usize,
    /// Database revisions no revision file defines.
    pub future: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DatabaseJson {
    pub backend: &'static str,
    /// The URL without its password.
    pub url: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub server_version: Option<String>,
}

/// How many migrations are in each state.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub applied: usize,
    pub pending: usize,
    pub out_of_order: usize,
    pub changed: usize,
    pub missing: usize,
    pub future: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MigrationJson {
    pub version: String,
    pub name: String,
    pub file: Option<String>,
    pub state: &'static str,
    pub applied_at: Option<String>,
    pub applied_by: Option<String>,
    pub execution_ms: Option<i64>,
    /// For a failed or interrupted no-transaction migration: statements completed.
    pub statements_done: Option<u32>,
    /// For a failed migration: the recorded error.
    pub error: Option<String>,
}

impl StatusReport {
    pub fn new(
        plan: &Plan,
        local: &[Migration],
        database: &DatabaseInfo,
        history_table: String,
        migrations_dir: String,
    ) -> StatusReport {
        let (status, exit_code) = if !plan.problems.is_empty() {
            ("inconsistent", code::INCONSISTENT)
        } else if !plan.steps.is_empty() {
            ("pending", code::PENDING)
        } else {
            ("up-to-date", code::SUCCESS)
        };
        let summary = Summary {
            applied: plan.count(State::Applied),
            pending: plan.count(State::Pending),
            out_of_order: plan.count(State::OutOfOrder),
            changed: plan.count(State::Changed),
            missing: plan.count(State::Missing),
            future: plan.count(State::Future),
            failed: plan.count(State::Failed),
        };
        let next = plan
            .steps
            .iter()
            .filter_map(|step| {
                let m = local.get(step.index())?;
                Some(match step {
                    Step::Apply { .. } => format!("apply {}", m.file_name),
                    Step::Resume { from_statement, .. } => {
                        format!("resume {} at statement {}", m.file_name, from_statement + 1)
                    }
                })
            })
            .collect();
        let migrations = plan
            .entries
            .iter()
            .map(|e| {
                let row = e.row.as_ref();
                let unfinished = row.filter(|r| r.state != RowState::Applied);
                MigrationJson {
                    version: e.version.to_string(),
                    name: e.name.clone(),
                    file: e.file_name.clone(),
                    state: e.state.as_str(),
                    applied_at: row.and_then(|r| r.applied_at.clone()),
                    applied_by: row.and_then(|r| r.applied_by.clone()),
                    execution_ms: row.and_then(|r| r.execution_ms),
                    statements_done: unfinished.map(|r| r.statements_done),
                    error: unfinished.and_then(|r| r.error.clone()),
                }
            })
            .collect();
        StatusReport {
            status,
            exit_code,
            database: DatabaseJson {
                backend: database.backend,
                url: database.url.clone(),
                host: database.host.clone(),
                port: database.port,
                name: database.name.clone(),
                server_version: database.server_version.clone(),
            },
            history_table,
            migrations_dir,
            current_version: plan.current.as_ref().map(ToString::to_string),
            summary,
            next,
            migrations,
            problems: plan.problems.iter().map(ToString::to_string).collect(),
            warnings: plan.warnings.clone(),
            drift: Vec::new(),
            drift_warnings: Vec::new(),
            command: None,
        }
    }

    /// Adds the migrate command: a command that would run makes the status `pending` (9), a
    /// refusal (several Alembic heads with `upgrade head`) `inconsistent` (7).
    pub fn with_command(mut self, command: CommandJson, refusal: Option<String>) -> StatusReport {
        if let Some(refusal) = refusal {
            self.problems.push(refusal);
            self.status = "inconsistent";
            self.exit_code = code::INCONSISTENT;
        } else if command.next == "run" && self.status == "up-to-date" {
            self.status = "pending";
            self.exit_code = code::PENDING;
        }
        self.command = Some(command);
        self
    }

    /// Adds the schema check. Drift decides the status only when the history is consistent and
    /// nothing is pending: with pending migrations, the drift may be nothing but their absence.
    pub fn with_drift(mut self, failures: Vec<String>, warnings: Vec<String>) -> StatusReport {
        if !failures.is_empty() && self.status == "up-to-date" {
            self.status = "drift";
            self.exit_code = code::VERIFY_FAILED;
        }
        self.drift = failures;
        self.drift_warnings = warnings;
        self
    }

    /// The stable JSON document, pretty-printed, ending in a newline.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The readable table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let db = &self.database;
        let server = db
            .server_version
            .as_deref()
            .map(|v| format!(" (server {v})"))
            .unwrap_or_default();
        out.push_str(&format!("database   {}{server}\n", db.url));
        out.push_str(&format!("history    {}\n", self.history_table));
        out.push_str(&format!("migrations {}\n", self.migrations_dir));
        out.push_str(&format!(
            "version    {}\n",
            self.current_version.as_deref().unwrap_or("none applied")
        ));
        if !self.migrations.is_empty() {
            let width = |f: &dyn Fn(&MigrationJson) -> usize, title: &str| {
                self.migrations
                    .iter()
                    .map(f)
                    .max()
                    .unwrap_or(0)
                    .max(title.len())
            };
            let wv = width(&|m| m.version.len(), "VERSION");
            let ws = width(&|m| m.state.len(), "STATE");
            let wn = width(&|m| m.name.len(), "NAME");
            out.push('\n');
            out.push_str(&format!(
                "{:wv$}  {:ws$}  {:wn$}  APPLIED\n",
                "VERSION", "STATE", "NAME"
            ));
            for m in &self.migrations {
                let applied = match (&m.applied_at, &m.error) {
                    (Some(at), _) => at.clone(),
                    (None, Some(error)) => format!(
                        "stopped after {} statements: {error}",
                        m.statements_done.unwrap_or(0)
                    ),
                    (None, None) => String::new(),
                };
                out.push_str(
                    format!(
                        "{:wv$}  {:ws$}  {:wn$}  {applied}",
                        m.version, m.state, m.name
                    )
                    .trim_end(),
                );
                out.push('\n');
            }
        }
        if let Some(command) = &self.command {
            out.push_str(&format!(
                "\nmigrate command `{}`: {} ({})\n",
                command.command, command.next, command.detail
            ));
            if let Some(a) = &command.alembic {
                let list = |items: &[String]| {
                    if items.is_empty() {
                        "none".to_string()
                    } else {
                        items.join(", ")
                    }
                };
                out.push_str(&format!("  alembic config  {}\n", a.config));
                out.push_str(&format!(
                    "  current         {} (table {})\n",
                    list(&a.current),
                    a.version_table
                ));
                out.push_str(&format!("  head(s)         {}\n", list(&a.heads)));
                out.push_str(&format!("  pending         {}\n", a.pending));
                if !a.future.is_empty() {
                    out.push_str(&format!("  future          {}\n", list(&a.future)));
                }
            }
        }
        if !self.problems.is_empty() {
            out.push_str("\nproblems (nothing will be applied until they are fixed):\n");
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        if !self.warnings.is_empty() {
            out.push_str("\nwarnings:\n");
            for w in &self.warnings {
                out.push_str(&format!("  - {w}\n"));
            }
        }
        if !self.drift.is_empty() {
            out.push_str("\nschema drift:\n");
            for d in &self.drift {
                out.push_str(&format!("  - {d}\n"));
            }
        }
        if !self.drift_warnings.is_empty() {
            out.push_str("\nschema warnings:\n");
            for d in &self.drift_warnings {
                out.push_str(&format!("  - {d}\n"));
            }
        }
        if !self.next.is_empty() && self.problems.is_empty() {
            out.push_str("\ninit would:\n");
            for n in &self.next {
                out.push_str(&format!("  - {n}\n"));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\nstatus: {} ({} applied, {} pending{}) — exit {}\n",
            self.status,
            s.applied,
            s.pending + s.out_of_order,
            [
                (s.changed, "changed"),
                (s.missing, "missing"),
                (s.failed, "failed"),
                (s.future, "future")
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!(", {n} {what}"))
            .collect::<String>(),
            self.exit_code
        ));
        printable(&out)
    }
}

/// `text` with control characters (other than newlines) shown as escapes: history rows are
/// written by whoever had access to the table, and must not be able to recolour or rewrite an
/// operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        for (text, shown) in [
            ("plain\n", "plain\n"),
            ("evil\u{1b}[31mred", "evil\\u{1b}[31mred"),
            ("a\rb\tc", "a\\rb\\tc"),
        ] {
            assert_eq!(printable(text), shown);
        }
    }
}
