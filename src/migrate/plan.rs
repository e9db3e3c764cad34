//! The planner: from the local migration files and the history rows to the plan and the state of
//! every migration. Pure: no I/O, no clock, no database.
//!
//! `status` prints this plan and `init` executes it, so the two can never disagree about what
//! is pending (sqlx's CLI re-implemented its loop and lost the lock; we keep one planner).
//!
//! States, as DESIGN.md defines them:
//! - `applied`: a history row in state `applied` whose checksum matches the file;
//! - `pending`: a file without a row, newer than every applied migration;
//! - `out-of-order`: a file without a row, older than the newest applied migration; refused
//!   unless `STARTGATE_OUT_OF_ORDER`;
//! - `changed`: applied, but the file's checksum differs; refused;
//! - `missing`: applied, no file, older than the newest file; refused;
//! - `future`: applied, no file, newer than every file; a warning, so that a rolled-back deploy
//!   still starts;
//! - `failed`: a no-transaction migration stopped part-way (a `running` row counts as failed:
//!   its runner was killed). It resumes by itself when the failed statement hit a lock or
//!   statement timeout (or was cancelled), or was a `CREATE INDEX CONCURRENTLY`, or after
//!   `startgate repair`; anything else half-done is refused until an operator repairs it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use super::{HistoryRow, Migration, RowState, Statement, Version, short_checksum, split};

/// SQLSTATE `lock_not_available`: `lock_timeout` expired.
pub const SQLSTATE_LOCK_TIMEOUT: &str = "55P03";
/// SQLSTATE `query_canceled`: `statement_timeout` expired, or startgate cancelled the statement
/// (wall-clock limit, signal). Either way the statement itself did not take effect.
pub const SQLSTATE_QUERY_CANCELED: &str = "57014";

/// What the planner needs besides files and rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `STARTGATE_OUT_OF_ORDER`: apply pending migrations older than the newest applied one.
    pub out_of_order: bool,
}

/// The state of one migration, as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Applied,
    Pending,
    OutOfOrder,
    Changed,
    Missing,
    Future,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::OutOfOrder => "out-of-order",
            State::Changed => "changed",
            State::Missing => "missing",
            State::Future => "future",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the plan: a migration known from a file, a history row, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: Version,
    pub name: String,
    /// The local file name, when there is a file.
    pub file_name: Option<String>,
    pub state: State,
    /// The history row, when there is one.
    pub row: Option<HistoryRow>,
}

/// Why a failed no-transaction migration may resume by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeReason {
    /// The failed statement hit `lock_timeout` or `statement_timeout`, or was cancelled.
    Timeout,
    /// The statement is a `CREATE INDEX CONCURRENTLY`: the INVALID index it left is dropped
    /// first, then the statement runs again.
    ConcurrentIndex,
    /// An operator ran `startgate repair`.
    Repaired,
}

/// One thing `init` will do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the local migration at this index of the `local` slice, from its first statement.
    Apply { index: usize },
    /// Resume a failed no-transaction migration at statement `from_statement` (0-based).
    Resume {
        index: usize,
        from_statement: u32,
        reason: ResumeReason,
    },
}

impl Step {
    /// Index of the migration in the `local` slice given to [`plan`].
    pub fn index(&self) -> usize {
        match self {
            Step::Apply { index } | Step::Resume { index, .. } => *index,
        }
    }
}

/// An inconsistency that makes `init` refuse to apply anything (exit 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    OutOfOrder {
        file_name: String,
        /// The oldest and newest applied versions newer than this file.
        newer_applied: (Version, Version),
    },
    Changed {
        file_name: String,
        recorded: String,
        actual: String,
    },
    Missing {
        version: Version,
        name: String,
        state: RowState,
        newest_file: Version,
    },
    /// Two history rows whose versions are equal numerically (`3` and `0003`).
    DuplicateRows { versions: Vec<String> },
    /// A failed (or interrupted) no-transaction migration that cannot resume by itself.
    NeedsRepair {
        file_name: String,
        version: Version,
        /// 0-based index of the statement that failed or was interrupted.
        statement: u32,
        /// Line of that statement in the file, when the statement still exists.
        line: Option<u32>,
        /// What the history row says happened.
        cause: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::OutOfOrder {
                file_name,
                newer_applied: (first, last),
            } => {
                if first == last {
                    write!(f, "{file_name} is pending but {first} is applied")?;
                } else {
                    write!(f, "{file_name} is pending but {first}–{last} are applied")?;
                }
                f.write_str(": set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it")
            }
            Problem::Changed {
                file_name,
                recorded,
                actual,
            } => write!(
                f,
                "{file_name} was changed after it was applied (checksum {} in the history, {} on disk): \
                 restore the applied text and put the change in a new migration",
                short_checksum(recorded),
                short_checksum(actual)
            ),
            Problem::Missing {
                version,
                name,
                state,
                newest_file,
            } => write!(
                f,
                "{version} ({name}) is {} but has no file, and newer files exist (up to {newest_file}): \
                 restore the file, or check that this deploy carries the right migrations directory",
                match state {
                    RowState::Applied => "applied",
                    RowState::Failed => "recorded as failed",
                    RowState::Running => "recorded as running",
                }
            ),
            Problem::DuplicateRows { versions } => write!(
                f,
                "the history has {} rows for one version ({}): versions compare numerically, so \
                 they are the same migration; delete the wrong row by hand",
                versions.len(),
                versions.join(", ")
            ),
            Problem::NeedsRepair {
                file_name,
                version,
                statement,
                line,
                cause,
            } => {
                write!(
                    f,
                    "{file_name} stopped part-way at statement {}",
                    statement + 1
                )?;
                if let Some(line) = line {
                    write!(f, " (line {line})")?;
                }
                write!(
                    f,
                    ": {cause}; it cannot resume by itself: finish or undo that statement by hand, then run \
                     `startgate repair {version}` to retry it, or `startgate repair {version} --skip` to count it as done"
                )
            }
        }
    }
}

/// The plan: every migration's state, what `init` will do, and what stops it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every migration known from files or history, sorted by version.
    pub entries: Vec<Entry>,
    /// What `init` will do, in version order. Empty when there are problems: nothing is applied
    /// while the history is inconsistent.
    pub steps: Vec<Step>,
    /// Inconsistencies; any one of them refuses the whole run (exit 7).
    pub problems: Vec<Problem>,
    /// Worth saying, not worth stopping for (`future` migrations).
    pub warnings: Vec<String>,
    /// The newest applied version.
    pub current: Option<Version>,
}

impl Plan {
    /// Nothing to do and nothing wrong.
    pub fn is_up_to_date(&self) -> bool {
        self.problems.is_empty() && self.steps.is_empty()
    }

    /// How many entries are in `state`.
    pub fn count(&self, state: State) -> usize {
        self.entries.iter().filter(|e| e.state == state).count()
    }
}

/// The statements of the files whose history row is unfinished, by version: the planner needs
/// them to judge whether a stopped no-transaction migration can resume (how many statements
/// the file has, which one failed). Every other file is planned by its checksum alone.
pub type Unfinished = BTreeMap<Version, Vec<Statement>>;

/// The indexes in `local` of the files whose history row is `failed` or `running`: the files
/// whose statements [`plan`] needs in [`Unfinished`].
pub fn unfinished(local: &[Migration], rows: &[HistoryRow]) -> Vec<usize> {
    let mut indexes: Vec<usize> = rows
        .iter()
        .filter(|r| r.state != RowState::Applied)
        .filter_map(|r| index_of(local, &r.version))
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

/// The index in `local` (sorted by version, as the loader returns it) of the file of `version`.
pub fn index_of(local: &[Migration], version: &Version) -> Option<usize> {
    local.binary_search_by(|m| m.version.cmp(version)).ok()
}

/// Plans `local` (sorted by version, no duplicates, as the source loader returns them) against
/// the history `rows` (any order); `unfinished` holds the statements of the files that
/// [`unfinished`] names. The rows move into the plan's entries: a thousand-row history is
/// then held once, not twice, on every start.
pub fn plan(
    local: &[Migration],
    mut rows: Vec<HistoryRow>,
    unfinished: &Unfinished,
    options: PlanOptions,
) -> Plan {
    rows.sort_by(|a, b| a.version.cmp(&b.version));
    let mut duplicates = Vec::new();
    for group in rows.chunk_by(|a, b| a.version == b.version) {
        if group.len() > 1 {
            duplicates.push(Problem::DuplicateRows {
                versions: group.iter().map(|r| r.version.to_string()).collect(),
            });
        }
    }
    // Plan with the first row of each version; the duplicate itself is the problem to report.
    rows.dedup_by(|b, a| a.version == b.version);

    let newest_applied = rows
        .iter()
        .filter(|r| r.state == RowState::Applied)
        .map(|r| &r.version)
        .max()
        .cloned();
    let newest_file = local.iter().map(|m| &m.version).max().cloned();

    let mut out = Plan {
        current: newest_applied.clone(),
        ..Plan::default()
    };

    // Walk both sorted lists together, so every version is seen once, in order; each row is
    // taken out of `rows` when its entry is made.
    let mut rows: Vec<Option<HistoryRow>> = rows.into_iter().map(Some).collect();
    let (mut li, mut ri) = (0, 0);
    while li < local.len() || ri < rows.len() {
        let file = local.get(li);
        let row = rows.get(ri).and_then(Option::as_ref);
        let order = match (file, row) {
            (Some(m), Some(r)) => m.version.cmp(&r.version),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match (order, file) {
            (Ordering::Equal, Some(m)) => {
                if let Some(r) = rows[ri].take() {
                    plan_both(&mut out, li, m, unfinished.get(&m.version), r);
                }
                li += 1;
                ri += 1;
            }
            (Ordering::Less, Some(m)) => {
                // Every row still in `rows` is newer than this file.
                plan_file_only(
                    &mut out,
                    li,
                    m,
                    &rows[ri..],
                    newest_applied.as_ref(),
                    options,
                );
                li += 1;
            }
            _ => {
                if let Some(r) = rows.get_mut(ri).and_then(Option::take) {
                    plan_row_only(&mut out, r, newest_file.as_ref());
                }
                ri += 1;
            }
        }
    }

    // A start holds the plan while it migrates: no room for entries that will never come.
    out.entries.shrink_to_fit();
    out.problems.splice(0..0, duplicates);
    if !out.problems.is_empty() {
        out.steps.clear();
    }
    out
}

fn entry(m: Option<&Migration>, r: Option<HistoryRow>, state: State) -> Entry {
    let (version, name) = match (m, &r) {
        (Some(m), _) => (m.version.clone(), m.name.clone()),
        (None, Some(r)) => (r.version.clone(), r.name.clone()),
        (None, None) => unreachable!("an entry comes from a file or a row"),
    };
    Entry {
        version,
        name,
        file_name: m.map(|m| m.file_name.clone()),
        state,
        row: r,
    }
}

fn plan_both(
    out: &mut Plan,
    index: usize,
    m: &Migration,
    statements: Option<&Vec<Statement>>,
    r: HistoryRow,
) {
    if r.state == RowState::Applied {
        if r.checksum == m.checksum {
            out.entries.push(entry(Some(m), Some(r), State::Applied));
        } else {
            out.problems.push(Problem::Changed {
                file_name: m.file_name.clone(),
                recorded: r.checksum.clone(),
                actual: m.checksum.clone(),
            });
            out.entries.push(entry(Some(m), Some(r), State::Changed));
        }
        return;
    }

    // `failed`, or `running` (the runner was killed while a statement ran).
    let statements = statements.map(Vec::as_slice);
    match resumable(m, statements, &r) {
        Ok(reason) => out.steps.push(Step::Resume {
            index,
            from_statement: r.statements_done,
            reason,
        }),
        Err(cause) => out.problems.push(Problem::NeedsRepair {
            file_name: m.file_name.clone(),
            version: m.version.clone(),
            statement: r.statements_done,
            line: statements
                .and_then(|s| s.get(r.statements_done as usize))
                .map(|s| s.line),
            cause,
        }),
    }
    out.entries.push(entry(Some(m), Some(r), State::Failed));
}

/// Whether a failed or interrupted no-transaction migration may resume by itself, and if not,
/// what the history says happened.
fn resumable(
    m: &Migration,
    statements: Option<&[Statement]>,
    r: &HistoryRow,
) -> Result<ResumeReason, String> {
    let Some(statements) = statements else {
        // The caller reads the statements of every file `unfinished` names.
        return Err("startgate did not read the file's statements (this is a bug)".to_string());
    };
    let total = statements.len();
    if r.statements_done as usize > total {
        return Err(format!(
            "the history says {} statements are done, but the file has {total}",
            r.statements_done
        ));
    }
    if r.repaired {
        return Ok(ResumeReason::Repaired);
    }
    // Only no-transaction migrations leave rows part-way; if the file no longer says so, its
    // statements would run again in one transaction, from the first.
    if !m.options.no_transaction {
        return Err(
            "the file is no longer a no-transaction migration (its -- startgate:no-transaction \
             was removed), but it stopped part-way as one"
                .to_string(),
        );
    }
    if r.checksum != m.checksum {
        return Err(format!(
            "the file was changed after it failed (checksum {} in the history, {} on disk)",
            short_checksum(&r.checksum),
            short_checksum(&m.checksum)
        ));
    }
    if let Some(statement) = statements.get(r.statements_done as usize)
        && is_create_index_concurrently(&statement.sql)
    {
        return Ok(ResumeReason::ConcurrentIndex);
    }
    if r.state == RowState::Failed
        && matches!(
            r.error_sqlstate.as_deref(),
            Some(SQLSTATE_LOCK_TIMEOUT | SQLSTATE_QUERY_CANCELED)
        )
    {
        return Ok(ResumeReason::Timeout);
    }
    Err(match (r.state, &r.error) {
        (RowState::Running, _) => {
            "startgate was stopped while the statement ran, so whether it took effect is unknown"
                .to_string()
        }
        (_, Some(error)) => match &r.error_sqlstate {
            Some(code) => format!("it failed with {code}: {error}"),
            None => format!("it failed: {error}"),
        },
        (_, None) => "it failed".to_string(),
    })
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY …`: on failure it leaves an INVALID index that can be
/// dropped and rebuilt, so it is always safe to retry.
pub fn is_create_index_concurrently(sql: &str) -> bool {
    let words = split::leading_keywords(sql, 4);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        words.as_slice(),
        ["create", "index", "concurrently", ..] | ["create", "unique", "index", "concurrently"]
    )
}

fn plan_file_only(
    out: &mut Plan,
    index: usize,
    m: &Migration,
    newer_rows: &[Option<HistoryRow>],
    newest_applied: Option<&Version>,
    options: PlanOptions,
) {
    let older_than_applied = newest_applied.is_some_and(|newest| m.version < *newest);
    if !older_than_applied {
        out.entries.push(entry(Some(m), None, State::Pending));
        out.steps.push(Step::Apply { index });
        return;
    }
    out.entries.push(entry(Some(m), None, State::OutOfOrder));
    if options.out_of_order {
        out.steps.push(Step::Apply { index });
        return;
    }
    let mut newer = newer_rows
        .iter()
        .flatten()
        .filter(|r| r.state == RowState::Applied && r.version > m.version)
        .map(|r| &r.version);
    // `older_than_applied` guarantees at least one newer applied row.
    if let Some(first) = newer.next() {
        let last = newer.next_back().unwrap_or(first);
        out.problems.push(Problem::OutOfOrder {
            file_name: m.file_name.clone(),
            newer_applied: (first.clone(), last.clone()),
        });
    }
}

fn plan_row_only(out: &mut Plan, r: HistoryRow, newest_file: Option<&Version>) {
    match newest_file {
        Some(newest) if r.version < *newest => {
            out.problems.push(Problem::Missing {
                version: r.version.clone(),
                name: r.name.clone(),
                state: r.state,
                newest_file: newest.clone(),
            });
            out.entries.push(entry(None, Some(r), State::Missing));
        }
        _ => {
            let what = match r.state {
                RowState::Applied => {
                    "is in the history but newer than every migration file: \
                     a newer release applied it"
                }
                RowState::Failed | RowState::Running => {
                    "stopped part-way in the history and is \
                     newer than every migration file: a newer release started it"
                }
            };
            out.warnings.push(format!(
                "{} ({}) {what} (is this a rolled-back deploy?); continuing",
                r.version, r.name
            ));
            out.entries.push(entry(None, Some(r), State::Future));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{MigrationOptions, Statement};
    use std::path::PathBuf;

    fn file(version: &str, name: &str) -> Migration {
        file_with(version, name, &["SELECT 1"])
    }

    thread_local! {
        /// The statements of the files `file_with` made on this test's thread, by version.
        static BODIES: std::cell::RefCell<Unfinished> = Default::default();
    }

    /// The planner, given the statements of the test's files as `init` reads them.
    fn plan(local: &[Migration], rows: &[HistoryRow], options: PlanOptions) -> Plan {
        let wanted = unfinished(local, rows);
        let bodies: Unfinished = BODIES.with(|bodies| {
            let bodies = bodies.borrow();
            wanted
                .iter()
                .filter_map(|&i| {
                    let v = &local[i].version;
                    bodies.get(v).map(|b| (v.clone(), b.clone()))
                })
                .collect()
        });
        super::plan(local, rows.to_vec(), &bodies, options)
    }

    fn file_with(version: &str, name: &str, statements: &[&str]) -> Migration {
        let file_name = format!("{version}_{name}.sql");
        let body: Vec<Statement> = statements
            .iter()
            .enumerate()
            .map(|(i, sql)| Statement {
                sql: sql.to_string(),
                line: i as u32 * 2 + 1,
                column: 1,
                offset: 0,
            })
            .collect();
        BODIES.with(|bodies| {
            bodies
                .borrow_mut()
                .insert(Version::parse(version).unwrap(), body)
        });
        Migration {
            version: Version::parse(version).unwrap(),
            name: name.to_string(),
            path: PathBuf::from("migrations").join(&file_name),
            file_name,
            checksum: format!("sum-{version}"),
            // Rows stop part-way only for no-transaction migrations.
            options: MigrationOptions {
                no_transaction: true,
                ..MigrationOptions::default()
            },
        }
    }

    fn row(version: &str, name: &str, state: RowState) -> HistoryRow {
        HistoryRow {
            version: Version::parse(version).unwrap(),
            name: name.to_string(),
            checksum: format!("sum-{version}"),
            state,
            statements_done: 0,
            applied_at: None,
            execution_ms: None,
            applied_by: None,
            error_sqlstate: None,
            error: None,
            repaired: false,
        }
    }

    fn applied(version: &str) -> HistoryRow {
        row(version, "m", RowState::Applied)
    }

    /// Runs the planner and compares `version:state` per entry, the steps as
    /// `apply VERSION` / `resume VERSION@N`, and the problem and warning messages.
    fn check(
        local: &[Migration],
        rows: &[HistoryRow],
        options: PlanOptions,
        states: &str,
        steps: &str,
        messages: &[&str],
    ) {
        let p = plan(local, rows, options);
        let got_states: Vec<String> = p
            .entries
            .iter()
            .map(|e| format!("{}:{}", e.version, e.state))
            .collect();
        assert_eq!(got_states.join(" "), states, "states");
        let got_steps: Vec<String> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::Apply { index } => format!("apply {}", local[*index].version),
                Step::Resume {
                    index,
                    from_statement,
                    ..
                } => format!("resume {}@{from_statement}", local[*index].version),
            })
            .collect();
        assert_eq!(got_steps.join(", "), steps, "steps");
        let got_messages: Vec<String> = p
            .problems
            .iter()
            .map(ToString::to_string)
            .chain(p.warnings.iter().cloned())
            .collect();
        assert_eq!(got_messages, messages, "messages");
    }

    const DEFAULT: PlanOptions = PlanOptions {
        out_of_order: false,
    };

    #[test]
    fn nothing_at_all() {
        check(&[], &[], DEFAULT, "", "", &[]);
    }

    #[test]
    fn everything_pending_on_an_empty_history() {
        check(
            &[file("0001", "a"), file("0002", "b")],
            &[],
            DEFAULT,
            "0001:pending 0002:pending",
            "apply 0001, apply 0002",
            &[],
        );
    }

    #[test]
    fn applied_and_pending() {
        let p = plan(
            &[file("0001", "a"), file("0002", "b")],
            &[applied("0001")],
            DEFAULT,
        );
        assert_eq!(p.current, Version::parse("1"));
        check(
            &[file("0001", "a"), file("0002", "b")],
            &[applied("0001")],
            DEFAULT,
            "0001:applied 0002:pending",
            "apply 0002",
            &[],
        );
    }

    #[test]
    fn versions_match_numerically() {
        let mut row = applied("3");
        row.checksum = "sum-0003".into();
        check(
            &[file("0003", "a")],
            &[row],
            DEFAULT,
            "0003:applied",
            "",
            &[],
        );
    }

    #[test]
    fn the_gap_is_out_of_order() {
        let local: Vec<Migration> = (1..=10)
            .map(|v| {
                file(
                    &format!("{v:04}"),
                    if v == 3 { "feature_flags" } else { "m" },
                )
            })
            .collect();
        let rows: Vec<HistoryRow> = (1..=10)
            .filter(|v| *v != 3)
            .map(|v| applied(&format!("{v:04}")))
            .collect();
        check(
            &local,
            &rows,
            DEFAULT,
            "0001:applied 0002:applied 0003:out-of-order 0004:applied 0005:applied 0006:applied \
             0007:applied 0008:applied 0009:applied 0010:applied",
            "",
            &[
                "0003_feature_flags.sql is pending but 0004–0010 are applied: \
                 set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it",
            ],
        );
        check(
            &local,
            &rows,
            PlanOptions { out_of_order: true },
            "0001:applied 0002:applied 0003:out-of-order 0004:applied 0005:applied 0006:applied \
             0007:applied 0008:applied 0009:applied 0010:applied",
            "apply 0003",
            &[],
        );
    }

    #[test]
    fn out_of_order_behind_a_single_applied_version() {
        check(
            &[file("1", "a"), file("2", "b")],
            &[applied("2")],
            DEFAULT,
            "1:out-of-order 2:applied",
            "",
            &[
                "1_a.sql is pending but 2 is applied: set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it",
            ],
        );
    }

    #[test]
    fn a_changed_file_is_refused_and_nothing_is_planned() {
        let mut changed = file("1", "a");
        changed.checksum = "0123456789abcdef-new".into();
        let mut recorded = applied("1");
        recorded.checksum = "fedcba9876543210-old".into();
        check(
            &[changed, file("2", "b")],
            &[recorded],
            DEFAULT,
            "1:changed 2:pending",
            "",
            &[
                "1_a.sql was changed after it was applied (checksum fedcba987654 in the history, \
               0123456789ab on disk): restore the applied text and put the change in a new migration",
            ],
        );
    }

    #[test]
    fn missing_and_future() {
        let mut gone = applied("2");
        gone.name = "drop_me".into();
        let mut ahead = applied("9");
        ahead.name = "from_the_next_release".into();
        check(
            &[file("1", "a"), file("3", "c")],
            &[applied("1"), gone, applied("3")],
            DEFAULT,
            "1:applied 2:missing 3:applied",
            "",
            &[
                "2 (drop_me) is applied but has no file, and newer files exist (up to 3): \
               restore the file, or check that this deploy carries the right migrations directory",
            ],
        );
        check(
            &[file("1", "a")],
            &[applied("1"), ahead],
            DEFAULT,
            "1:applied 9:future",
            "",
            &[
                "9 (from_the_next_release) is in the history but newer than every migration file: \
               a newer release applied it (is this a rolled-back deploy?); continuing",
            ],
        );
    }

    #[test]
    fn a_future_row_makes_older_pending_files_out_of_order() {
        let mut ahead = applied("9");
        ahead.name = "next".into();
        check(
            &[file("1", "a"), file("5", "e")],
            &[applied("1"), ahead],
            DEFAULT,
            "1:applied 5:out-of-order 9:future",
            "",
            &[
                "5_e.sql is pending but 9 is applied: set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it",
                "9 (next) is in the history but newer than every migration file: a newer release applied it \
                 (is this a rolled-back deploy?); continuing",
            ],
        );
    }

    #[test]
    fn a_failed_row_without_a_file() {
        let mut newer = failed("9", 1, Some("42601"), "syntax error");
        newer.name = "next".into();
        check(
            &[file("1", "a")],
            &[applied("1"), newer],
            DEFAULT,
            "1:applied 9:future",
            "",
            &[
                "9 (next) stopped part-way in the history and is newer than every migration file: a newer \
               release started it (is this a rolled-back deploy?); continuing",
            ],
        );
        let mut older = failed("2", 1, Some("42601"), "syntax error");
        older.name = "gone".into();
        check(
            &[file("1", "a"), file("3", "c")],
            &[applied("1"), older],
            DEFAULT,
            "1:applied 2:missing 3:pending",
            "",
            &[
                "2 (gone) is recorded as failed but has no file, and newer files exist (up to 3): restore the \
               file, or check that this deploy carries the right migrations directory",
            ],
        );
    }

    #[test]
    fn two_rows_for_one_version_are_refused() {
        let mut short = applied("3");
        short.checksum = "sum-0003".into();
        let mut long = applied("0003");
        long.name = "dup".into();
        check(
            &[file("0003", "c")],
            &[short, long],
            DEFAULT,
            "0003:applied",
            "",
            &[
                "the history has 2 rows for one version (3, 0003): versions compare numerically, so they are \
               the same migration; delete the wrong row by hand",
            ],
        );
    }

    #[test]
    fn statements_done_beyond_the_file_is_refused() {
        let m = file_with("5", "e", &["SELECT 1", "SELECT 2"]);
        check(
            &[m],
            &[failed(
                "5",
                7,
                Some("57014"),
                "canceling statement due to statement timeout",
            )],
            DEFAULT,
            "5:failed",
            "",
            &[
                "5_e.sql stopped part-way at statement 8: the history says 7 statements are done, but the file \
               has 2; it cannot resume by itself: finish or undo that statement by hand, then run `startgate \
               repair 5` to retry it, or `startgate repair 5 --skip` to count it as done",
            ],
        );
    }

    fn failed(version: &str, done: u32, sqlstate: Option<&str>, error: &str) -> HistoryRow {
        let mut r = row(version, "idx", RowState::Failed);
        r.statements_done = done;
        r.error_sqlstate = sqlstate.map(str::to_string);
        r.error = Some(error.to_string());
        r
    }

    #[test]
    fn failed_on_a_timeout_resumes_at_the_failed_statement() {
        let m = file_with("7", "idx", &["SET x = 1", "ALTER TABLE t ADD c int"]);
        check(
            std::slice::from_ref(&m),
            &[failed(
                "7",
                1,
                Some("55P03"),
                "canceling statement due to lock timeout",
            )],
            DEFAULT,
            "7:failed",
            "resume 7@1",
            &[],
        );
        check(
            &[m],
            &[failed(
                "7",
                1,
                Some("57014"),
                "canceling statement due to statement timeout",
            )],
            DEFAULT,
            "7:failed",
            "resume 7@1",
            &[],
        );
    }

    #[test]
    fn failed_create_index_concurrently_resumes_whatever_the_error() {
        let m = file_with(
            "7",
            "idx",
            &["SELECT 1", "CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)"],
        );
        let p = plan(
            std::slice::from_ref(&m),
            &[failed(
                "7",
                1,
                Some("23505"),
                "could not create unique index",
            )],
            DEFAULT,
        );
        assert_eq!(
            p.steps,
            [Step::Resume {
                index: 0,
                from_statement: 1,
                reason: ResumeReason::ConcurrentIndex
            }]
        );
        let mut running = row("7", "idx", RowState::Running);
        running.statements_done = 1;
        check(&[m], &[running], DEFAULT, "7:failed", "resume 7@1", &[]);
    }

    #[test]
    fn anything_else_half_done_needs_repair() {
        let m = file_with("7", "data", &["UPDATE t SET a = 1", "VACUUM t"]);
        check(
            &[m.clone(), file("8", "next")],
            &[failed(
                "7",
                1,
                Some("42601"),
                "syntax error at or near \"VACUM\"",
            )],
            DEFAULT,
            "7:failed 8:pending",
            "",
            &[
                "7_data.sql stopped part-way at statement 2 (line 3): it failed with 42601: syntax error at or \
               near \"VACUM\"; it cannot resume by itself: finish or undo that statement by hand, then run \
               `startgate repair 7` to retry it, or `startgate repair 7 --skip` to count it as done",
            ],
        );
        let mut running = row("7", "data", RowState::Running);
        running.statements_done = 0;
        check(
            std::slice::from_ref(&m),
            &[running],
            DEFAULT,
            "7:failed",
            "",
            &[
                "7_data.sql stopped part-way at statement 1 (line 1): startgate was stopped while the statement \
               ran, so whether it took effect is unknown; it cannot resume by itself: finish or undo that \
               statement by hand, then run `startgate repair 7` to retry it, or `startgate repair 7 --skip` \
               to count it as done",
            ],
        );
        // After `repair`, it resumes.
        let mut repaired = failed("7", 1, Some("42601"), "syntax error");
        repaired.repaired = true;
        check(&[m], &[repaired], DEFAULT, "7:failed", "resume 7@1", &[]);
    }

    #[test]
    fn a_failed_row_whose_file_lost_its_no_transaction_directive_needs_repair() {
        let mut m = file_with(
            "7",
            "x",
            &["INSERT INTO x VALUES (1)", "SELECT pg_sleep(2)"],
        );
        m.options.no_transaction = false;
        check(
            &[m],
            &[failed(
                "7",
                1,
                Some("57014"),
                "canceling statement due to statement timeout",
            )],
            DEFAULT,
            "7:failed",
            "",
            &[
                "7_x.sql stopped part-way at statement 2 (line 3): the file is no longer a no-transaction \
               migration (its -- startgate:no-transaction was removed), but it stopped part-way as one; \
               it cannot resume by itself: finish or undo that statement by hand, then run `startgate \
               repair 7` to retry it, or `startgate repair 7 --skip` to count it as done",
            ],
        );
    }

    #[test]
    fn a_failed_migration_whose_file_changed_needs_repair() {
        let mut m = file_with("7", "idx", &["CREATE INDEX CONCURRENTLY i ON t (a)"]);
        m.checksum = "aaaaaaaaaaaaaaaa".into();
        let mut r = failed("7", 0, Some("55P03"), "lock timeout");
        r.checksum = "bbbbbbbbbbbbbbbb".into();
        check(
            &[m],
            &[r],
            DEFAULT,
            "7:failed",
            "",
            &[
                "7_idx.sql stopped part-way at statement 1 (line 1): the file was changed after it failed \
               (checksum bbbbbbbbbbbb in the history, aaaaaaaaaaaa on disk); it cannot resume by itself: \
               finish or undo that statement by hand, then run `startgate repair 7` to retry it, or \
               `startgate repair 7 --skip` to count it as done",
            ],
        );
    }

    #[test]
    fn recognises_create_index_concurrently() {
        for (sql, expected) in [
            ("CREATE INDEX CONCURRENTLY i ON t (a)", true),
            ("create unique index concurrently i on t (a)", true),
            (
                "/* why */ CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)",
                true,
            ),
            ("CREATE INDEX i ON t (a)", false),
            ("DROP INDEX CONCURRENTLY i", false),
            ("REINDEX INDEX CONCURRENTLY i", false),
        ] {
            assert_eq!(is_create_index_concurrently(sql), expected, "{sql}");
        }
    }
}
