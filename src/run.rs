//! The orchestration of each command: settings in, phases through [`Progress`], backends through
//! the [`Backend`] trait, an exit status out. Generic over the backend, so a new engine changes
//! nothing here but the dispatch on the URL scheme.
//!
//! Order matters and is the same for every command: everything that can be checked without a
//! side effect (settings, migration files) is checked first, then the database is touched. The
//! migration lock, once taken, is released on every path out of the locked section, errors and
//! signals included (and, should startgate die, by the server when the session ends).

use std::future::Future;
use std::time::Instant;

use crate::backend::postgres::Postgres;
use crate::backend::sqlite::Sqlite;
use crate::backend::{
    Backend, BriefHistory, ForeignHistory, ForeignTool, HistoryWrite, LockKey, TableName,
};
use crate::config::{BackupMode, Settings};
use crate::dburl::{self, DatabaseUrl};
use crate::exit::Error;
use crate::migrate::apply::{self, Limits};
use crate::migrate::plan::{self, Plan, PlanOptions};
use crate::migrate::source::{self, Loaded, SourceError};
use crate::migrate::{HistoryRow, RowState, Version};
use crate::phase::Phase;
use crate::progress::{DatabaseFacts, Progress};
use crate::report::StatusReport;
use crate::schema::Snapshot;
use crate::schema::diff::{Difference, Kind, Mode, Verdict, judge};
use crate::supervise::signals::{self, StopToken};
use crate::tool::Tool;
use crate::wait::wait_for_database;

/// Runs `body` on the backend the URL names.
macro_rules! on_backend {
    ($url:expr, $body:ident ( $($arg:expr),* )) => {
        match $url.backend() {
            dburl::Backend::Postgres => $body::<Postgres>($($arg),*).await,
            dburl::Backend::Sqlite => $body::<Sqlite>($($arg),*).await,
        }
    };
}

/// `startgate status [--json]`: prints the plan and returns 0 (up to date), 9 (only pending
/// migrations) or 7 (inconsistent).
pub async fn status(settings: &Settings, json: bool) -> Result<u8, Error> {
    let url = database_url(settings)?;
    must_exist(url)?;
    let local = load_migrations(settings)?;
    let expectations = load_expectations(settings)?;
    let tool = crate::tool::prepare(settings)?;
    let progress = Progress::new();
    let result = on_backend!(
        url,
        status_on(
            settings,
            url,
            &local,
            &expectations,
            tool.as_ref(),
            json,
            &progress
        )
    );
    finish(&progress, &result);
    result
}

async fn status_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    local: &Loaded,
    expectations: &Expectations,
    tool: Option<&Tool>,
    json: bool,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = connect(settings, url, progress).await?;
    let rows = db.read_history(&settings.history_table).await;
    let rows = match rows {
        Ok(rows) => rows.unwrap_or_default(),
        Err(e) => {
            db.close().await;
            return Err(e.into());
        }
    };
    let plan = match plan_files(local, rows, settings, &mut Checked::new()) {
        Ok(plan) => plan,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    let command = match tool {
        Some(tool) => match crate::tool::look(&mut db, tool, settings).await {
            Ok(assessment) => Some(crate::tool::report(tool, assessment, settings)),
            Err(e) => {
                db.close().await;
                return Err(e);
            }
        },
        None => None,
    };
    let verdict = check_schema(&mut db, settings, expectations, InvalidIndexes::Ask).await;
    let report = StatusReport::new(
        &plan,
        &local.migrations,
        db.info(),
        TableName(&settings.history_table).to_string(),
        settings.migrations.display().to_string(),
    );
    db.close().await;
    let verdict = verdict?;
    let report = match command {
        Some((command, refusal)) => report.with_command(command, refusal),
        None => report,
    };
    let report = report.with_drift(
        verdict.failures.iter().map(ToString::to_string).collect(),
        verdict.warnings.iter().map(ToString::to_string).collect(),
    );
    let text = if json {
        report.to_json()
    } else {
        report.to_text()
    };
    out(&text);
    Ok(report.exit_code)
}

/// `startgate init`: wait for the database, take the lock, apply what is pending, verify; exits
/// 0 with a summary line, or with the documented status of what went wrong.
pub async fn init(settings: &Settings) -> Result<u8, Error> {
    let url = database_url(settings)?;
    let expectations = load_expectations(settings)?;
    let tool = crate::tool::prepare(settings)?;
    let stop = listen_for_signals()?;
    let started = Instant::now();
    let loading = load_in_background(settings);
    let progress = Progress::new();
    let _endpoint = serve_endpoint(settings, &progress).await?;
    let result = on_backend!(
        url,
        init_on(
            settings,
            url,
            loading,
            &expectations,
            tool.as_ref(),
            &stop,
            &progress,
            started,
            Phase::Done
        )
    );
    finish(&progress, &result);
    result
}

/// `startgate run -- CMD [ARG...]`: the steps of `init`, then the app, supervised and probed
/// until it exits; exits with the app's own status (DESIGN.md "Supervising").
pub async fn run(settings: &Settings, argv: &[std::ffi::OsString]) -> Result<u8, Error> {
    if argv.is_empty() {
        return Err(crate::exit::AppError::NoCommand.into());
    }
    let url = database_url(settings)?;
    let expectations = load_expectations(settings)?;
    let tool = crate::tool::prepare(settings)?;
    let (stop, mut forwarded) = crate::supervise::app::listen()?;
    crate::supervise::reaper::adopt_orphans();
    let started = Instant::now();
    let loading = load_in_background(settings);
    let progress = Progress::new();
    let _endpoint = serve_endpoint(settings, &progress).await?;
    let result = async {
        on_backend!(
            url,
            init_on(
                settings,
                url,
                loading,
                &expectations,
                tool.as_ref(),
                &stop,
                &progress,
                started,
                Phase::StartingApp
            )
        )?;
        crate::supervise::app::supervise(settings, argv, &progress, &stop, &mut forwarded).await
    }
    .await;
    finish(&progress, &result);
    result
}

/// `startgate watch`: probe the app in the next container and serve the endpoint until
/// SIGTERM (DESIGN.md "`watch`"). No database work.
pub async fn watch(settings: &Settings) -> Result<u8, Error> {
    let Some(probe) = settings.effective_probe() else {
        return Err(Error::Usage(
            "watch needs something to probe: set STARTGATE_PROBE (http://HOST:PORT/PATH, \
             tcp://HOST:PORT or exec:COMMAND) or PORT"
                .to_string(),
        ));
    };
    let stop = listen_for_signals()?;
    // As PID 1 of a sidecar, whatever the exec: probes or the hang command orphan is ours.
    let _reaper = crate::supervise::reaper::start();
    let progress = Progress::new();
    let _endpoint = serve_endpoint(settings, &progress).await?;
    let result = crate::supervise::watch::watch(settings, &probe, &progress, &stop).await;
    finish(&progress, &result);
    result
}

#[allow(clippy::too_many_arguments)]
async fn init_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    loading: Loading,
    expectations: &Expectations,
    tool: Option<&Tool>,
    stop: &StopToken,
    progress: &Progress,
    started: Instant,
    next: Phase,
) -> Result<u8, Error> {
    let (mut db, mut files) =
        connect_while_reading::<B>(settings, url, loading, stop, progress).await?;
    let result = async {
        let outcome = init_steps(&mut db, settings, &mut files, tool, stop, progress).await?;
        stoppable(
            stop,
            verify_phase(
                &mut db,
                settings,
                expectations,
                outcome.invalid_indexes,
                progress,
            ),
        )
        .await?;
        Ok::<_, Error>(outcome)
    }
    .await;
    db.close().await;
    let outcome = result?;
    progress.enter(next);
    let elapsed = started.elapsed().as_millis();
    let command_ran = outcome
        .command
        .as_deref()
        .is_some_and(|c| c.starts_with("ran"));
    let mut summary = match outcome.applied {
        0 if command_ran => format!("migrated in {elapsed} ms"),
        0 => format!("nothing to apply ({elapsed} ms)"),
        1 => format!("applied 1 migration in {elapsed} ms"),
        n => format!("applied {n} migrations in {elapsed} ms"),
    };
    match &outcome.current {
        Some(v) => summary.push_str(&format!(", now at version {v}")),
        None => summary.push_str(", no migrations applied yet"),
    }
    if let Some(backup) = &outcome.backup {
        summary.push_str(&format!(
            "; backup {} ({})",
            backup.path.display(),
            crate::backup::human_size(backup.size)
        ));
    }
    if let Some(command) = &outcome.command {
        summary.push_str(&format!("; migrate command: {command}"));
    }
    if let (Some(time), lsn) = &outcome.recovery {
        summary.push_str(&format!("; recovery point {time}"));
        if let Some(lsn) = lsn {
            summary.push_str(&format!(" at WAL {lsn}"));
        }
    }
    tracing::info!(
        event = "summary",
        applied = outcome.applied,
        duration_ms = elapsed as u64,
        backup = outcome
            .backup
            .as_ref()
            .map(|b| b.path.display().to_string())
            .unwrap_or_default(),
        "{summary}"
    );
    Ok(crate::exit::code::SUCCESS)
}

/// What `init` did, for its summary line.
#[derive(Debug, Default)]
struct InitOutcome {
    applied: usize,
    /// The version the database is at.
    current: Option<Version>,
    backup: Option<crate::backup::Backup>,
    /// The recovery point before the first migration applied (server time, WAL position).
    recovery: (Option<String>, Option<String>),
    /// What became of the migrate command: `ran in 812 ms`, `not run: Alembic is at…`.
    command: Option<String>,
    /// Whether the verifying phase must look for INVALID indexes: not when nothing was changed
    /// since a read that found none.
    invalid_indexes: InvalidIndexes,
}

/// The phases after the database is up.
async fn init_steps<B: Backend>(
    db: &mut B,
    settings: &Settings,
    files: &mut Files,
    tool: Option<&Tool>,
    stop: &StopToken,
    progress: &Progress,
) -> Result<InitOutcome, Error> {
    let table = &settings.history_table;
    progress.enter(Phase::AcquiringLock);
    // Read without the lock first: an up-to-date replica must never queue behind another
    // replica's long migration (unless every run must take a backup). The history is asked
    // for while the files are still being read; bad files end the run as soon as they are
    // read, without waiting for the history (which a lock may hold up). A migrate command
    // without migration files costs one query: its own.
    let brief = if tool.is_some() && files.get().await?.migrations.is_empty() {
        BriefHistory::default()
    } else {
        let reading = stoppable(stop, db.read_history_brief(table));
        tokio::pin!(reading);
        tokio::select! {
            biased;
            loaded = files.get() => {
                loaded?;
                reading.await?
            }
            brief = &mut reading => {
                files.get().await?;
                brief?
            }
        }
    };
    let rows = brief.rows.unwrap_or_default();
    let local = files.get().await?;
    let mut checked = Checked::new();
    let first = plan_files(local, rows, settings, &mut checked)?;
    learn_plan(progress, &first);
    let assessment = match tool {
        Some(tool) => Some(stoppable(stop, crate::tool::assess(db, tool, settings)).await?),
        None => None,
    };
    learn_assessment(progress, assessment.as_ref());
    let command_runs = assessment.as_ref().is_some_and(|a| a.run);
    if first.is_up_to_date() && !command_runs && settings.backup != BackupMode::Always {
        log_warnings(&first);
        progress.skipped("nothing to apply, no lock needed");
        progress.enter(Phase::BackingUp);
        progress.skipped("nothing to apply");
        progress.enter(Phase::Migrating);
        progress.skipped("nothing to apply");
        return Ok(InitOutcome {
            current: first.current,
            command: assessment.map(|a| format!("not run: {}", a.detail)),
            // Nothing was changed since the history was read: what that read saw still holds.
            invalid_indexes: match brief.any_invalid_index {
                Some(false) => InvalidIndexes::NoneFound,
                _ => InvalidIndexes::Ask,
            },
            ..InitOutcome::default()
        });
    }

    // Under the lock the plan is made again from a fresh read; this one is done with (at a
    // thousand files it is some 400 KiB that would otherwise stay for the whole migration).
    drop(first);
    let key = LockKey::for_table(table);
    stoppable(stop, db.prepare_for_migrating()).await?;
    apply::acquire_lock(db, key, settings.lock_wait_timeout, stop).await?;
    progress.done("holding the migration lock");
    let result = locked_steps(db, settings, local, &mut checked, tool, key, stop, progress).await;
    if let Err(e) = db.unlock(key).await {
        tracing::warn!(error = %e, "could not release the migration lock; the server releases it when the session ends");
    }
    result
}

/// What the migrate command's assessment says, for `/status`: Alembic's pending revisions
/// count as pending migrations.
fn learn_assessment(progress: &Progress, assessment: Option<&crate::tool::Assessment>) {
    let Some(comparison) = assessment.and_then(|a| a.alembic.as_ref()) else {
        return;
    };
    progress.learn(|facts| {
        facts.migrations.pending =
            Some(facts.migrations.pending.unwrap_or(0) + comparison.pending as u64);
        if facts.migrations.current.is_none() && !comparison.current.is_empty() {
            facts.migrations.current = Some(
                comparison
                    .current
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
    });
}

/// Under the lock: create the history table, read the history again, refuse an inconsistent
/// one, back up, apply.
#[allow(clippy::too_many_arguments)]
async fn locked_steps<B: Backend>(
    db: &mut B,
    settings: &Settings,
    local: &Loaded,
    checked: &mut Checked,
    tool: Option<&Tool>,
    key: LockKey,
    stop: &StopToken,
    progress: &Progress,
) -> Result<InitOutcome, Error> {
    let table = &settings.history_table;
    stoppable(stop, db.ensure_history_table(table)).await?;
    let rows = stoppable(stop, db.read_history(table))
        .await?
        .unwrap_or_default();
    let no_rows = rows.is_empty();
    let plan = plan_files(local, rows, settings, checked)?;
    learn_plan(progress, &plan);
    log_warnings(&plan);
    refuse_problems(&plan)?;
    // The command's turn is judged again under the lock: another replica may have run it
    // while this one waited. Sessions an earlier run's command left behind go first.
    let command_name = crate::tool::application_name(key);
    let assessment = match tool {
        Some(tool) => {
            stoppable(stop, crate::tool::end_leftovers(db, key, &command_name)).await?;
            Some(stoppable(stop, crate::tool::assess(db, tool, settings)).await?)
        }
        None => None,
    };
    let command_runs = assessment.as_ref().is_some_and(|a| a.run);
    if !plan.steps.is_empty() {
        stoppable(stop, db.monitor_ready()).await?;
    }

    progress.enter(Phase::BackingUp);
    let backup = match (settings.backup, plan.steps.is_empty() && !command_runs) {
        (BackupMode::Never, _) => {
            progress.skipped("STARTGATE_BACKUP=never");
            None
        }
        (BackupMode::Auto, true) => {
            progress.skipped("nothing to apply");
            None
        }
        // A first deploy: a dump of an empty database restores nothing.
        (BackupMode::Auto, false)
            if no_rows && stoppable(stop, db.holds_nothing(table)).await? =>
        {
            progress.skipped("the database holds no objects yet");
            None
        }
        _ => {
            let backup = crate::backup::take(db, settings, plan.current.as_ref(), stop).await?;
            progress.done(format!(
                "{} ({})",
                backup.path.display(),
                crate::backup::human_size(backup.size)
            ));
            Some(backup)
        }
    };

    progress.enter(Phase::Migrating);
    if plan.steps.is_empty() && !command_runs {
        // Another replica applied everything while this one waited for the lock.
        progress.skipped("nothing to apply");
        return Ok(InitOutcome {
            current: plan.current,
            backup,
            command: assessment.map(|a| format!("not run: {}", a.detail)),
            ..InitOutcome::default()
        });
    }
    let done = apply_files(db, settings, &plan, local, key, stop, progress).await?;
    let current = done.newest.clone().max(plan.current.clone());
    progress.learn(|facts| {
        facts.migrations.current = current.as_ref().map(ToString::to_string);
    });
    let command = match (tool, assessment) {
        (Some(tool), Some(assessment)) if assessment.run => {
            tracing::info!(
                event = "migrate.assessed",
                "migrate command: {}",
                assessment.detail
            );
            let ran = crate::tool::run(db, tool, settings, key, &command_name, stop).await?;
            let after = stoppable(stop, crate::tool::check_after(db, tool, settings)).await?;
            if let Some(after) = &after {
                progress.learn(|facts| {
                    facts.migrations.pending = Some(0);
                    facts.migrations.current =
                        Some(after.current.iter().cloned().collect::<Vec<_>>().join(", "));
                });
            }
            Some(format!("ran in {} ms", ran.elapsed.as_millis()))
        }
        (_, assessment) => assessment.map(|a| format!("not run: {}", a.detail)),
    };
    let mut detail = match done.count {
        1 => "applied 1 migration".to_string(),
        n => format!("applied {n} migrations"),
    };
    if let Some(command) = &command {
        detail.push_str(&format!("; migrate command {command}"));
    }
    progress.done(detail);
    Ok(InitOutcome {
        applied: done.count,
        current,
        backup,
        recovery: done.first_recovery,
        command,
        invalid_indexes: InvalidIndexes::Ask,
    })
}

/// Applies the plan's steps (startgate's own files), counting each one in `/status` as it
/// commits.
async fn apply_files<B: Backend>(
    db: &mut B,
    settings: &Settings,
    plan: &Plan,
    local: &Loaded,
    key: LockKey,
    stop: &StopToken,
    progress: &Progress,
) -> Result<apply::AppliedSteps, Error> {
    if plan.steps.is_empty() {
        return Ok(apply::AppliedSteps::default());
    }
    let host = host_name();
    let mut newest = plan.current.clone();
    let done = apply::apply_steps(
        db,
        plan,
        &local.migrations,
        &settings.history_table,
        key,
        Limits::from_settings(settings),
        &host,
        stop,
        |applied| {
            newest = newest.take().max(Some(applied.version.clone()));
            progress.learn(|facts| {
                facts.migrations.applied += 1;
                facts.migrations.pending = facts.migrations.pending.map(|p| p.saturating_sub(1));
                facts.migrations.current = newest.as_ref().map(ToString::to_string);
            })
        },
    )
    .await?;
    Ok(done)
}

/// `startgate backup`: takes a backup now, under the migration lock.
pub async fn backup(settings: &Settings) -> Result<u8, Error> {
    let url = database_url(settings)?;
    let stop = listen_for_signals()?;
    let progress = Progress::new();
    let result = on_backend!(url, backup_on(settings, url, &stop, &progress));
    finish(&progress, &result);
    result
}

async fn backup_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    stop: &StopToken,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = until_stopped(connect(settings, url, progress), stop).await?;
    let table = &settings.history_table;
    let result = under_lock(
        &mut db,
        settings,
        stop,
        progress,
        Phase::BackingUp,
        async |db: &mut B| {
            let rows = stoppable(stop, db.read_history(table))
                .await?
                .unwrap_or_default();
            let current = rows
                .iter()
                .filter(|r| r.state == RowState::Applied)
                .map(|r| &r.version)
                .max()
                .cloned();
            let backup = crate::backup::take(&mut *db, settings, current.as_ref(), stop).await?;
            progress.done(format!(
                "{} ({})",
                backup.path.display(),
                crate::backup::human_size(backup.size)
            ));
            Ok::<_, Error>(backup)
        },
    )
    .await;
    db.close().await;
    let backup = result?;
    out(&format!("{}\n", backup.path.display()));
    tracing::info!(
        event = "summary",
        file = %backup.path.display(),
        size = backup.size,
        "backup {} ({}){}",
        backup.path.display(),
        crate::backup::human_size(backup.size),
        match backup.removed.len() {
            0 => String::new(),
            n => format!("; removed {n} older backup{}", if n == 1 { "" } else { "s" }),
        }
    );
    Ok(crate::exit::code::SUCCESS)
}

/// What the verifying phase checks, read (and checked) before the database is touched.
#[derive(Debug, Clone)]
struct Expectations {
    expected: Option<Snapshot>,
    required: Vec<crate::config::Required>,
    mode: Mode,
}

impl Expectations {
    /// Whether a full snapshot is needed (otherwise only INVALID indexes are checked).
    fn need_snapshot(&self) -> bool {
        self.expected.is_some() || !self.required.is_empty()
    }
}

/// Reads `STARTGATE_EXPECT_SCHEMA` (a missing, unreadable or malformed file is a usage error,
/// exit 2) and `STARTGATE_REQUIRE`.
fn load_expectations(settings: &Settings) -> Result<Expectations, Error> {
    let expected = match &settings.expect_schema {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "STARTGATE_EXPECT_SCHEMA={}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            Some(crate::schema::from_json(&text).map_err(|e| {
                Error::Usage(format!("STARTGATE_EXPECT_SCHEMA={}: {e}", path.display()))
            })?)
        }
    };
    Ok(Expectations {
        expected,
        required: settings.require.clone(),
        mode: Mode::from(settings.verify),
    })
}

/// Whether the verifying phase must ask the catalog for INVALID indexes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum InvalidIndexes {
    #[default]
    Ask,
    /// An earlier query of this run found none, and nothing has been changed since.
    NoneFound,
}

/// Checks the live schema against the expectations; every INVALID index fails, whatever the
/// mode. Returns the verdict (warnings included) without deciding the exit status.
async fn check_schema<B: Backend>(
    db: &mut B,
    settings: &Settings,
    expectations: &Expectations,
    invalid: InvalidIndexes,
) -> Result<Verdict, Error> {
    let mut differences = if expectations.need_snapshot() {
        let live = db.snapshot(&settings.history_table).await?;
        crate::schema::diff::differences(
            expectations.expected.as_ref(),
            &expectations.required,
            &live,
        )
    } else {
        Vec::new()
    };
    // Always, and from the catalog directly: the snapshot leaves some indexes out (those of
    // materialized views), and an INVALID index must fail whatever is configured.
    let invalid = match invalid {
        InvalidIndexes::Ask => db.invalid_indexes().await?,
        InvalidIndexes::NoneFound => Vec::new(),
    };
    for name in invalid {
        let message = format!("index {name} is INVALID");
        if !differences.iter().any(|d| d.message == message) {
            differences.push(Difference {
                kind: Kind::Invalid,
                message,
            });
        }
    }
    Ok(judge(differences, expectations.mode))
}

/// The verifying phase: exit 8 listing every failing difference; warnings are logged.
async fn verify_phase<B: Backend>(
    db: &mut B,
    settings: &Settings,
    expectations: &Expectations,
    invalid: InvalidIndexes,
    progress: &Progress,
) -> Result<(), Error> {
    progress.enter(Phase::Verifying);
    let verdict = check_schema(db, settings, expectations, invalid).await?;
    for warning in &verdict.warnings {
        tracing::warn!(event = "verify.warning", "{warning}");
    }
    if !verdict.passed() {
        return Err(Error::Verify(
            verdict.failures.iter().map(ToString::to_string).collect(),
        ));
    }
    let what = match (&expectations.expected, expectations.required.len()) {
        (Some(_), 0) => "the schema matches STARTGATE_EXPECT_SCHEMA".to_string(),
        (Some(_), n) => format!("the schema matches STARTGATE_EXPECT_SCHEMA and {n} requirements"),
        (None, 0) => {
            "no INVALID index (STARTGATE_REQUIRE and STARTGATE_EXPECT_SCHEMA are unset)".to_string()
        }
        (None, n) => format!("{n} requirements met, no INVALID index"),
    };
    match verdict.warnings.len() {
        0 => progress.done(what),
        n => progress.done(format!(
            "{what}, {n} warning{}",
            if n == 1 { "" } else { "s" }
        )),
    }
    Ok(())
}

/// `startgate verify`: the verifying phase alone; exit 0, or 8 listing every difference.
pub async fn verify(settings: &Settings) -> Result<u8, Error> {
    let url = database_url(settings)?;
    must_exist(url)?;
    let expectations = load_expectations(settings)?;
    let stop = listen_for_signals()?;
    let progress = Progress::new();
    let result = on_backend!(
        url,
        verify_on(settings, url, &expectations, &stop, &progress)
    );
    finish(&progress, &result);
    result
}

async fn verify_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    expectations: &Expectations,
    stop: &StopToken,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = until_stopped(connect(settings, url, progress), stop).await?;
    let result = stoppable(
        stop,
        verify_phase(
            &mut db,
            settings,
            expectations,
            InvalidIndexes::Ask,
            progress,
        ),
    )
    .await;
    db.close().await;
    result?;
    out("schema verified\n");
    Ok(crate::exit::code::SUCCESS)
}

/// `startgate schema [--json]`: prints the live schema snapshot.
pub async fn schema(settings: &Settings, json: bool) -> Result<u8, Error> {
    let url = database_url(settings)?;
    must_exist(url)?;
    let progress = Progress::new();
    let result = on_backend!(url, schema_on(settings, url, json, &progress));
    finish(&progress, &result);
    result
}

async fn schema_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    json: bool,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = connect(settings, url, progress).await?;
    let snapshot = db.snapshot(&settings.history_table).await;
    db.close().await;
    let mut snapshot = snapshot?;
    crate::schema::normalise(&mut snapshot);
    out(&if json {
        crate::schema::to_json(&snapshot)
    } else {
        crate::schema::to_text(&snapshot)
    });
    Ok(crate::exit::code::SUCCESS)
}

/// `startgate repair VERSION [--skip]`: clears a failed no-transaction migration so the next
/// run resumes at the failed statement, or with `--skip` after it.
pub async fn repair(settings: &Settings, version: &str, skip: bool) -> Result<u8, Error> {
    let wanted = Version::parse(version).ok_or_else(|| {
        Error::Usage(format!(
            "repair: {version:?} is not a version (digits with optional dots, as in the file name)"
        ))
    })?;
    let url = database_url(settings)?;
    let local = load_migrations(settings)?;
    let stop = listen_for_signals()?;
    let progress = Progress::new();
    let result = on_backend!(
        url,
        repair_on(settings, url, &local, &wanted, skip, &stop, &progress)
    );
    finish(&progress, &result);
    result
}

#[allow(clippy::too_many_arguments)]
async fn repair_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    local: &Loaded,
    wanted: &Version,
    skip: bool,
    stop: &StopToken,
    progress: &Progress,
) -> Result<u8, Error> {
    let m = local
        .migrations
        .iter()
        .find(|m| &m.version == wanted)
        .ok_or_else(|| {
            Error::Usage(format!(
                "repair: no migration file in {} has version {wanted}",
                settings.migrations.display()
            ))
        })?;
    let statements = source::read_statements(m).map_err(SourceError::Problems)?;
    let mut db: B = until_stopped(connect(settings, url, progress), stop).await?;
    let table = &settings.history_table;
    let result = under_lock(
        &mut db,
        settings,
        stop,
        progress,
        Phase::Migrating,
        async |db: &mut B| {
            let rows = stoppable(stop, db.read_history(table))
                .await?
                .unwrap_or_default();
            let row = rows.iter().find(|r| &r.version == wanted).ok_or_else(|| {
                Error::Usage(format!(
                    "repair: version {wanted} has no row in {}: nothing to repair",
                    TableName(table)
                ))
            })?;
            if row.state == RowState::Applied {
                return Err(Error::Usage(format!(
                    "repair: {} is applied: nothing to repair",
                    m.file_name
                )));
            }
            let total = statements.len() as u32;
            if skip && row.statements_done >= total {
                return Err(Error::Usage(format!(
                    "repair: every statement of {} is done, so there is nothing to skip; run \
                     `startgate repair {}` without --skip, and the next init records it as applied",
                    m.file_name, row.version
                )));
            }
            let done = (row.statements_done + u32::from(skip)).min(total);
            stoppable(
                stop,
                db.write_history(
                    table,
                    &[HistoryWrite {
                        version: row.version.as_str().to_string(),
                        name: m.name.clone(),
                        checksum: m.checksum.clone(),
                        state: RowState::Failed,
                        statements_done: done,
                        applied_by: host_name(),
                        repaired: true,
                        error: row.error.clone(),
                        error_sqlstate: row.error_sqlstate.clone(),
                    }],
                ),
            )
            .await?;
            let statement = |i: u32| {
                statements
                    .get(i as usize)
                    .map(|s| format!("statement {} (line {})", i + 1, s.line))
                    .unwrap_or_else(|| format!("statement {}", i + 1))
            };
            let next = if done >= total {
                "every statement is done; the next `startgate init` records it as applied"
                    .to_string()
            } else {
                format!("the next `startgate init` resumes at {}", statement(done))
            };
            let message = if skip {
                format!(
                    "repaired {}: {} counted as done; {next}",
                    m.file_name,
                    statement(row.statements_done)
                )
            } else {
                format!("repaired {}: {next}", m.file_name)
            };
            Ok::<_, Error>(message)
        },
    )
    .await;
    db.close().await;
    let message = result?;
    tracing::info!(event = "repair", "{message}");
    out(&format!("{message}\n"));
    Ok(crate::exit::code::SUCCESS)
}

/// `startgate unlock [--force]`: shows who holds the migration lock; with `--force`, terminates
/// that session (its transaction is rolled back and the lock released).
pub async fn unlock(settings: &Settings, force: bool) -> Result<u8, Error> {
    let url = database_url(settings)?;
    must_exist(url)?;
    let stop = listen_for_signals()?;
    let progress = Progress::new();
    let result = on_backend!(url, unlock_on(settings, url, force, &stop, &progress));
    finish(&progress, &result);
    result
}

async fn unlock_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    force: bool,
    stop: &StopToken,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = until_stopped(connect(settings, url, progress), stop).await?;
    let table = &settings.history_table;
    let key = LockKey::for_table(table);
    let holder = db.lock_holder(key).await;
    let result = match holder {
        Err(e) => Err(e.into()),
        Ok(None) => {
            out(&format!(
                "the migration lock for {} is free\n",
                TableName(table)
            ));
            Ok(crate::exit::code::SUCCESS)
        }
        Ok(Some(holder)) if !force => {
            out(&format!(
                "the migration lock for {} is held by {holder}\n\
                 if that session is stuck, `startgate unlock --force` terminates it (its transaction is rolled back)\n",
                TableName(table)
            ));
            Ok(crate::exit::code::SUCCESS)
        }
        Ok(Some(holder)) => match db.terminate(holder.pid).await {
            Ok(true) => {
                tracing::warn!(
                    event = "unlock",
                    pid = holder.pid,
                    "terminated the migration lock's holder: {holder}"
                );
                out(&format!(
                    "terminated pid {}: its transaction was rolled back and the migration lock released\n",
                    holder.pid
                ));
                Ok(crate::exit::code::SUCCESS)
            }
            Ok(false) => Err(Error::Internal(format!(
                "could not terminate pid {}: it had already ended, or this role may not signal it \
                 (it needs to be the same role, a member of pg_signal_backend, or a superuser)",
                holder.pid
            ))),
            Err(e) => Err(e.into()),
        },
    };
    db.close().await;
    result
}

/// `startgate baseline [--from TOOL] [VERSION]`: records migrations as applied without running
/// them, up to VERSION or as another tool's history lists them.
pub async fn baseline(
    settings: &Settings,
    from: Option<&str>,
    version: Option<&str>,
) -> Result<u8, Error> {
    let target = match (from, version) {
        (Some(tool), None) => Baseline::From(ForeignTool::parse(tool).ok_or_else(|| {
            Error::Usage(format!(
                "baseline: --from {tool:?} is not a tool startgate reads (sqlx, dbmate, flyway, golang-migrate)"
            ))
        })?),
        (None, Some(v)) => Baseline::UpTo(Version::parse(v).ok_or_else(|| {
            Error::Usage(format!(
                "baseline: {v:?} is not a version (digits with optional dots)"
            ))
        })?),
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "baseline: give either --from TOOL or VERSION, not both".to_string(),
            ));
        }
        (None, None) => {
            return Err(Error::Usage(
                "baseline: give VERSION (record every migration up to it) or --from sqlx|dbmate|flyway|golang-migrate"
                    .to_string(),
            ));
        }
    };
    let url = database_url(settings)?;
    let local = load_migrations(settings)?;
    let stop = listen_for_signals()?;
    let progress = Progress::new();
    let result = on_backend!(
        url,
        baseline_on(settings, url, &local, target, &stop, &progress)
    );
    finish(&progress, &result);
    result
}

/// What `baseline` records.
#[derive(Debug, Clone)]
enum Baseline {
    UpTo(Version),
    From(ForeignTool),
}

async fn baseline_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    local: &Loaded,
    target: Baseline,
    stop: &StopToken,
    progress: &Progress,
) -> Result<u8, Error> {
    let mut db: B = until_stopped(connect(settings, url, progress), stop).await?;
    let table = &settings.history_table;
    let result = under_lock(&mut db, settings, stop, progress, Phase::Migrating, async |db: &mut B| {
            let (versions, source) = match &target {
                Baseline::UpTo(v) => (
                    baseline_up_to(local, v)?,
                    format!("up to version {v}"),
                ),
                Baseline::From(tool) => {
                    let foreign = stoppable(stop, db.read_foreign_history(*tool)).await?;
                    (
                        baseline_from(local, *tool, &foreign)?,
                        format!("from {}'s {}", tool.as_str(), tool.table()),
                    )
                }
            };
            stoppable(stop, db.ensure_history_table(table)).await?;
            let rows = stoppable(stop, db.read_history(table)).await?.unwrap_or_default();
            let mut writes = Vec::new();
            let mut problems = Vec::new();
            let applied_by = match &target {
                Baseline::UpTo(_) => format!("baseline by {}", host_name()),
                Baseline::From(tool) => format!("baseline from {} by {}", tool.as_str(), host_name()),
            };
            for m in local.migrations.iter().filter(|m| versions.contains(&m.version)) {
                match rows.iter().find(|r| r.version == m.version) {
                    Some(r) if r.state == RowState::Applied && r.checksum == m.checksum => {}
                    Some(r) => problems.push(format!(
                        "{} is already in the history as {}{}; baseline changes nothing there",
                        m.file_name,
                        r.state.as_str(),
                        if r.checksum == m.checksum { "" } else { " with another checksum" }
                    )),
                    None => writes.push(HistoryWrite {
                        version: m.version.as_str().to_string(),
                        name: m.name.clone(),
                        checksum: m.checksum.clone(),
                        state: RowState::Applied,
                        statements_done: source::read_statements(m)
                            .map_err(SourceError::Problems)?
                            .len() as u32,
                        applied_by: applied_by.clone(),
                        repaired: false,
                        error: None,
                        error_sqlstate: None,
                    }),
                }
            }
            if !problems.is_empty() {
                return Err(Error::Inconsistent(problems));
            }
            stoppable(stop, db.write_history(table, &writes)).await?;
            let pending = local
                .migrations
                .iter()
                .filter(|m| !versions.contains(&m.version) && !rows.iter().any(|r| r.version == m.version))
                .count();
            let range = match (writes.first(), writes.last()) {
                (Some(first), Some(last)) if writes.len() > 1 => format!(" ({}–{})", first.version, last.version),
                (Some(only), _) => format!(" ({})", only.version),
                _ => String::new(),
            };
            Ok::<_, Error>(format!(
                "recorded {} migration{} as applied without running them{range}, {source}; {pending} pending",
                writes.len(),
                if writes.len() == 1 { "" } else { "s" },
            ))
    })
    .await;
    db.close().await;
    let message = result?;
    tracing::info!(event = "baseline", "{message}");
    out(&format!("{message}\n"));
    Ok(crate::exit::code::SUCCESS)
}

fn baseline_up_to(local: &Loaded, up_to: &Version) -> Result<Vec<Version>, Error> {
    let versions: Vec<Version> = local
        .migrations
        .iter()
        .filter(|m| &m.version <= up_to)
        .map(|m| m.version.clone())
        .collect();
    if versions.is_empty() {
        return Err(Error::Usage(format!(
            "baseline: no migration file has a version up to {up_to}"
        )));
    }
    Ok(versions)
}

/// The local versions another tool's history says are applied, or every mismatch.
fn baseline_from(
    local: &Loaded,
    tool: ForeignTool,
    foreign: &ForeignHistory,
) -> Result<Vec<Version>, Error> {
    let name = tool.as_str();
    let table = tool.table();
    let has_file = |v: &Version| local.migrations.iter().any(|m| &m.version == v);
    let mut problems = Vec::new();
    let applied: Vec<Version> = match foreign {
        ForeignHistory::Current { version, dirty } => {
            if *dirty {
                problems.push(format!(
                    "{name} marked version {version} dirty (it failed part-way): finish or undo it by hand and clear the flag with `migrate force` first"
                ));
            }
            if !has_file(version) {
                problems.push(format!(
                    "{name}'s current version {version} has no migration file here"
                ));
            }
            local
                .migrations
                .iter()
                .filter(|m| &m.version <= version)
                .map(|m| m.version.clone())
                .collect()
        }
        ForeignHistory::Versions {
            applied,
            failed,
            baseline,
        } => {
            for v in failed {
                problems.push(format!(
                    "{name} recorded version {v} as failed in {table}: fix it with {name} first"
                ));
            }
            let mut set: Vec<Version> = applied.clone();
            if let Some(b) = baseline {
                set.extend(
                    local
                        .migrations
                        .iter()
                        .filter(|m| &m.version <= b)
                        .map(|m| m.version.clone()),
                );
            }
            set.sort();
            set.dedup();
            for v in &set {
                if !has_file(v) {
                    problems.push(format!(
                        "version {v} is in {table} but no migration file here has it"
                    ));
                }
            }
            if let Some(newest) = set.last() {
                for m in local.migrations.iter().filter(|m| &m.version < newest) {
                    if !set.contains(&m.version) {
                        problems.push(format!(
                            "{} is older than the newest version {name} applied ({newest}) but {name} never applied it: \
                             apply it by hand or use `startgate baseline VERSION`",
                            m.file_name
                        ));
                    }
                }
            }
            set
        }
    };
    if !problems.is_empty() {
        return Err(Error::Inconsistent(problems));
    }
    if applied.is_empty() {
        return Err(Error::Usage(format!(
            "baseline: {table} lists no applied migration: nothing to record"
        )));
    }
    Ok(applied)
}

fn plan_options(settings: &Settings) -> PlanOptions {
    PlanOptions {
        out_of_order: settings.out_of_order,
    }
}

fn log_warnings(plan: &Plan) {
    for warning in &plan.warnings {
        tracing::warn!(event = "migrations.future", "{warning}");
    }
}

fn refuse_problems(plan: &Plan) -> Result<(), Error> {
    if plan.problems.is_empty() {
        return Ok(());
    }
    Err(Error::Inconsistent(
        plan.problems.iter().map(ToString::to_string).collect(),
    ))
}

/// Writes command output to stdout. A reader that went away (`startgate status | head -1`)
/// is not an error worth a panic; the exit status still says how the command went.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Ends the command in the phase machine, so that its last phase logs how it ended: `done` on
/// success, `stopping` for a signal, `failed` with the reason and exit status otherwise.
fn finish(progress: &Progress, result: &Result<u8, Error>) {
    match result {
        Ok(_) if progress.phase().precedes(Phase::Done) => progress.enter(Phase::Done),
        Ok(_) => {}
        Err(e) => match e.stop() {
            Some(stop) => progress.stop(stop.name()),
            None => progress.fail(
                crate::redact::mask(&e.to_string()).into_owned(),
                i32::from(e.exit_code()),
            ),
        },
    }
}

/// Takes the migration lock, enters `phase`, runs `body`, and releases the lock on every path
/// out of it (should startgate die instead, the server releases it with the session).
async fn under_lock<B: Backend, T>(
    db: &mut B,
    settings: &Settings,
    stop: &StopToken,
    progress: &Progress,
    phase: Phase,
    body: impl AsyncFnOnce(&mut B) -> Result<T, Error>,
) -> Result<T, Error> {
    let key = LockKey::for_table(&settings.history_table);
    progress.enter(Phase::AcquiringLock);
    apply::acquire_lock(db, key, settings.lock_wait_timeout, stop).await?;
    progress.done("holding the migration lock");
    progress.enter(phase);
    let outcome = body(db).await;
    if let Err(e) = db.unlock(key).await {
        tracing::warn!(error = %e, "could not release the migration lock; the server releases it when the session ends");
    }
    outcome
}

/// Runs one backend call, ended early by a stop request. The call's session may be left
/// mid-query; startgate is exiting, and the server ends the session (and releases its locks).
async fn stoppable<T, E: Into<Error>>(
    stop: &StopToken,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    tokio::select! {
        result = call => result.map_err(Into::into),
        stop = stop.wait() => Err(Error::Interrupted(stop)),
    }
}

/// Ends `fut` early with [`Error::Interrupted`] when a stop is requested.
async fn until_stopped<T>(
    fut: impl Future<Output = Result<T, Error>>,
    stop: &StopToken,
) -> Result<T, Error> {
    tokio::select! {
        result = fut => result,
        stop = stop.wait() => Err(Error::Interrupted(stop)),
    }
}

fn listen_for_signals() -> Result<StopToken, Error> {
    signals::listen().map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))
}

/// The URL for commands that migrate: `STARTGATE_DATABASE_URL`, else `DATABASE_URL`.
fn database_url(settings: &Settings) -> Result<&DatabaseUrl, Error> {
    settings
        .migration_database_url()
        .map_err(|e| Error::Usage(e.to_string()))
}

/// Commands that only read (`status`, `verify`, `schema`, `unlock`) create nothing: a SQLite
/// file that does not exist is a mistyped path, exit 2 naming it, not an empty database.
fn must_exist(url: &DatabaseUrl) -> Result<(), Error> {
    match url.sqlite_path() {
        Some(path) if !path.exists() => Err(Error::Usage(format!(
            "the SQLite database {} does not exist (only init, run, backup, baseline and repair \
             create it)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The migration files, being read on a blocking thread.
type Loading = tokio::task::JoinHandle<Result<Loaded, Error>>;

/// Every start reads every migration file: on other threads, while the database answers the
/// connection. A problem in them still ends the run at once (see `connect_while_reading`).
fn load_in_background(settings: &Settings) -> Loading {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || load_migrations(&settings))
}

/// Serves the endpoint on `STARTGATE_LISTEN` (unless it is empty) from now until the returned
/// value is dropped. An address that cannot be used is exit 2, naming it.
async fn serve_endpoint(
    settings: &Settings,
    progress: &Progress,
) -> Result<Option<crate::endpoint::server::Endpoint>, Error> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    let token = settings
        .status_token
        .as_ref()
        .map(|t| t.expose().to_string());
    crate::endpoint::server::start(addr, progress.subscribe(), token)
        .await
        .map(Some)
        .map_err(|e| Error::Usage(e.to_string()))
}

/// What the plan says about the migrations, for `/status`.
fn learn_plan(progress: &Progress, plan: &Plan) {
    let pending = plan.count(plan::State::Pending)
        + plan.count(plan::State::OutOfOrder)
        + plan.count(plan::State::Failed);
    progress.learn(|facts| {
        facts.migrations.pending = Some(pending as u64);
        facts.migrations.current = plan.current.as_ref().map(ToString::to_string);
    });
}

/// The migration files of `init`: being read on a blocking thread, or read.
enum Files {
    Reading(Loading),
    Read(Loaded),
}

impl Files {
    /// The files, once read.
    async fn get(&mut self) -> Result<&Loaded, Error> {
        if let Files::Reading(handle) = self {
            *self = Files::Read(joined(handle.await)?);
        }
        match self {
            Files::Read(loaded) => Ok(loaded),
            Files::Reading(_) => Err(Error::Internal(
                "the migration files were not read".to_string(),
            )),
        }
    }
}

fn joined(result: Result<Result<Loaded, Error>, tokio::task::JoinError>) -> Result<Loaded, Error> {
    result.map_err(|e| Error::Internal(format!("reading the migration files: {e}")))?
}

/// Connects (phase `waiting_for_database`) while the files are read; the reading goes on
/// while the history is read. Bad files win: they end the run at once with their problems,
/// without waiting for a database that may be down, and are reported rather than a connection
/// failure when both go wrong.
async fn connect_while_reading<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    mut loading: Loading,
    stop: &StopToken,
    progress: &Progress,
) -> Result<(B, Files), Error> {
    let connecting = until_stopped(connect::<B>(settings, url, progress), stop);
    tokio::pin!(connecting);
    tokio::select! {
        biased;
        loaded = &mut loading => {
            let local = joined(loaded)?;
            Ok((connecting.await?, Files::Read(local)))
        }
        connected = &mut connecting => match connected {
            Ok(db) => Ok((db, Files::Reading(loading))),
            Err(e) => {
                // Bad files explain more than a database that is down, or a signal.
                joined(loading.await)?;
                Err(e)
            }
        },
    }
}

/// The versions whose statements were checked in this run; see [`plan_files`].
type Checked = std::collections::BTreeSet<Version>;

/// Plans the local files against the history rows. Applied files are known by their checksum
/// alone; here the statements of the files the plan needs are read: those of unfinished rows
/// (the planner judges whether they resume) and those of every pending or out-of-order file
/// (checked, then dropped: `init` reads each one again just before it runs). A problem in
/// them is exit 2, every one at once, before anything is written. `checked` skips files
/// already checked by an earlier plan of the same run.
fn plan_files(
    local: &Loaded,
    rows: Vec<HistoryRow>,
    settings: &Settings,
    checked: &mut Checked,
) -> Result<Plan, Error> {
    let migrations = &local.migrations;
    let mut problems = Vec::new();
    let mut unfinished = plan::Unfinished::new();
    for index in plan::unfinished(migrations, &rows) {
        let m = &migrations[index];
        match source::read_statements(m) {
            Ok(statements) => {
                unfinished.insert(m.version.clone(), statements);
            }
            Err(found) => problems.extend(found),
        }
    }
    let plan = plan::plan(migrations, rows, &unfinished, plan_options(settings));
    let to_run = plan
        .entries
        .iter()
        .filter(|e| matches!(e.state, plan::State::Pending | plan::State::OutOfOrder))
        .filter(|e| !checked.contains(&e.version))
        .map(|e| e.version.clone())
        .collect::<Vec<_>>();
    for version in to_run {
        let Some(m) = plan::index_of(migrations, &version).map(|i| &migrations[i]) else {
            continue;
        };
        match source::read_statements(m) {
            Ok(_) => {
                checked.insert(m.version.clone());
            }
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        return Err(SourceError::Problems(problems).into());
    }
    Ok(plan)
}

/// Loads and checks every migration file before anything touches the database. A missing
/// default `./migrations` directory is fine when a migrate command does the migrating.
fn load_migrations(settings: &Settings) -> Result<Loaded, Error> {
    let dir = &settings.migrations;
    if !dir.exists() && !settings.migrations_explicit && settings.migrate_command.is_some() {
        return Ok(Loaded {
            migrations: Vec::new(),
            warnings: Vec::new(),
        });
    }
    let loaded = source::load_dir(dir)?;
    for warning in &loaded.warnings {
        tracing::warn!(event = "migrations.ignored", "{warning}");
    }
    Ok(loaded)
}

/// Waits for the database (phase `waiting_for_database`).
async fn connect<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    progress: &Progress,
) -> Result<B, Error> {
    progress.enter(Phase::WaitingForDatabase);
    let db: B = wait_for_database(
        url,
        &application_name(),
        settings.db_wait_timeout,
        settings.lock_timeout,
    )
    .await?;
    let info = db.info();
    progress.learn(|facts| {
        facts.database = Some(DatabaseFacts {
            backend: info.backend,
            host: info.host.clone(),
            name: info.name.clone(),
        });
    });
    progress.done(format!(
        "connected to {}{}",
        info.url,
        info.server_version
            .as_deref()
            .map(|v| match info.backend {
                "sqlite" => format!(" (SQLite {v})"),
                _ => format!(" (server {v})"),
            })
            .unwrap_or_default()
    ));
    Ok(db)
}

/// `application_name` for startgate's sessions: `startgate@HOST`, so `pg_stat_activity` says
/// which replica holds what. PostgreSQL truncates it at 63 bytes; we cut it first, on a
/// character boundary.
pub fn application_name() -> String {
    let mut name = format!("startgate@{}", host_name());
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The host or pod name: `HOSTNAME` (set in every Kubernetes pod and most containers), else
/// the kernel's host name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}
