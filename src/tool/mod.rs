//! Existing migration tools under the gate (DESIGN.md "Existing migration tools"):
//! `STARTGATE_MIGRATE_COMMAND` as the migrating step, after startgate's own files.
//!
//! The order, inside `init`'s steps (see `crate::run`):
//! 1. [`prepare`], before the database is touched: the Alembic project (config, every revision
//!    file) when Alembic awareness is on and a config is found, and the fingerprint of
//!    `STARTGATE_MIGRATE_FINGERPRINT`'s paths. A problem in either is exit 2, naming it.
//! 2. [`assess`], without the lock: one query says whether the command must run (Alembic: the
//!    version table against the heads; fingerprint: the last recorded success; otherwise it
//!    always runs). Up to date: no lock, no backup, no Python.
//! 3. Under the lock, after the backup and startgate's own files: sessions left by an earlier
//!    run's command are terminated, the assessment is made again (another replica may have
//!    run the command while this one waited), and [`run`] runs it: bounded by
//!    `STARTGATE_MIGRATION_TIMEOUT`, its sessions watched, stopped with its group and its
//!    server sessions on a timeout or a signal.
//! 4. [`check_after`]: for Alembic, the version table must now hold the heads (exit 8).
//!
//! Error messages and the log never show a password: the command's output is masked line by
//! line, and its text is masked wherever it is repeated.

pub mod fingerprint;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::alembic::{self, Comparison, Graph, Target};
use crate::backend::{
    Backend, CommandLimits, CommandRun, CommandSession, CommandSessions, LockKey,
};
use crate::config::{AlembicMode, Settings};
use crate::duration::HumanDuration;
use crate::exit::{Error, stderr_text};
use crate::redact;
use crate::supervise::command::{self, Running};
use crate::supervise::signals::{Stop, StopToken};

/// The application name prefix of a migrate command's sessions.
pub const APP_PREFIX: &str = "startgate-migrate/";

/// How often a running command's sessions are looked at.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The migrate command, as prepared before the database is touched.
#[derive(Debug)]
pub struct Tool {
    pub command: String,
    pub alembic: Option<AlembicProject>,
    /// The hash of the command and `STARTGATE_MIGRATE_FINGERPRINT`'s paths, when set.
    pub fingerprint: Option<String>,
}

/// An Alembic project found for the command.
#[derive(Debug)]
pub struct AlembicProject {
    /// The config file it was found through, for messages.
    pub config: String,
    pub graph: Graph,
    pub target: Target,
}

/// Why a migrate command failed (exit 6), or was stopped (128+N).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Start(#[from] command::StartError),
    #[error("the migrate command `{command}` {how}{}", stderr_text(.stderr))]
    Failed {
        command: String,
        how: String,
        stderr: Vec<String>,
    },
    #[error(
        "the migrate command `{command}` did not finish within {} (STARTGATE_MIGRATION_TIMEOUT): \
         its process group was stopped{}{}",
        HumanDuration(*.limit),
        sessions_text(.terminated),
        stderr_text(.stderr)
    )]
    TimedOut {
        command: String,
        limit: Duration,
        terminated: Vec<String>,
        stderr: Vec<String>,
    },
    #[error(
        "the migrate command was not run: startgate's session no longer holds the migration \
         lock, so DATABASE_URL goes through a transaction-mode pooler (PgBouncer, Supabase port \
         6543, Neon -pooler): set STARTGATE_DATABASE_URL to a direct connection"
    )]
    LockLost,
    #[error("the migrate command `{command}` was stopped by {}{}", .stop.name(), sessions_text(.terminated))]
    Interrupted {
        command: String,
        stop: Stop,
        terminated: Vec<String>,
    },
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Interrupted { stop, .. } => stop.exit_code(),
            // The URL is wrong for migrating: a configuration error.
            CommandError::LockLost => crate::exit::code::USAGE,
            _ => crate::exit::code::MIGRATION_FAILED,
        }
    }

    pub fn stop(&self) -> Option<Stop> {
        match self {
            CommandError::Interrupted { stop, .. } => Some(*stop),
            _ => None,
        }
    }
}

fn sessions_text(terminated: &[String]) -> String {
    match terminated {
        [] => String::new(),
        sessions => format!(
            ", and its server sessions terminated ({})",
            sessions.join("; ")
        ),
    }
}

/// Reads what can be read before the database is touched: the Alembic project and the
/// fingerprint. `None` without `STARTGATE_MIGRATE_COMMAND`.
pub fn prepare(settings: &Settings) -> Result<Option<Tool>, Error> {
    let Some(command) = settings.migrate_command.clone() else {
        return Ok(None);
    };
    let alembic = match settings.alembic {
        AlembicMode::Off => None,
        AlembicMode::Auto => {
            let cwd = std::env::current_dir()
                .map_err(|e| Error::Internal(format!("cannot read the working directory: {e}")))?;
            let env = std::env::var("ALEMBIC_CONFIG").ok();
            let found = alembic::project::discover(&command, env.as_deref(), &cwd)
                .map_err(|e| alembic_problem(&e))?;
            match found {
                None => None,
                Some(project) => {
                    let graph =
                        alembic::project::load(&project).map_err(|e| alembic_problem(&e))?;
                    Some(AlembicProject {
                        config: project.config.display().to_string(),
                        graph,
                        target: alembic::upgrade_target(&command),
                    })
                }
            }
        }
    };
    if alembic.is_some() && !settings.migrate_fingerprint.is_empty() {
        tracing::warn!(
            event = "settings",
            "STARTGATE_MIGRATE_FINGERPRINT is not used: Alembic awareness compares the revision \
             files with the version table instead"
        );
    }
    let fingerprint = match (&alembic, settings.migrate_fingerprint.as_slice()) {
        (None, paths @ [_, ..]) => {
            Some(fingerprint::fingerprint(&command, paths).map_err(Error::Usage)?)
        }
        _ => None,
    };
    Ok(Some(Tool {
        command,
        alembic,
        fingerprint,
    }))
}

/// A problem with the Alembic project, with its causes (an unreadable file says why), as
/// exit 2.
fn alembic_problem(problem: &dyn std::error::Error) -> Error {
    let mut text = problem.to_string();
    let mut cause = problem.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        cause = e.source();
    }
    Error::Usage(format!(
        "Alembic awareness: {text} (set STARTGATE_ALEMBIC=off to run the command without it)"
    ))
}

/// Whether the command must run, and why (or why not).
#[derive(Debug)]
pub struct Assessment {
    pub run: bool,
    /// For the log and the summary: `2 Alembic revisions pending`, `up to date`…
    pub detail: String,
    /// The Alembic comparison, when Alembic awareness is on.
    pub alembic: Option<Comparison>,
    /// Why running it is refused (exit 7): several Alembic heads with `upgrade head`.
    pub refusal: Option<String>,
}

/// Decides, in one query, whether the command must run. Several Alembic heads while the
/// command upgrades to `head` is exit 7, naming them.
pub async fn assess<B: Backend>(
    db: &mut B,
    tool: &Tool,
    settings: &Settings,
) -> Result<Assessment, Error> {
    let assessment = look(db, tool, settings).await?;
    match &assessment.refusal {
        Some(refusal) => Err(Error::Inconsistent(vec![refusal.clone()])),
        None => Ok(assessment),
    }
}

/// [`assess`] without turning a refusal into an error (`status` shows it).
pub async fn look<B: Backend>(
    db: &mut B,
    tool: &Tool,
    settings: &Settings,
) -> Result<Assessment, Error> {
    if let Some(project) = &tool.alembic {
        let rows = db
            .read_alembic_versions(&settings.alembic_version_table)
            .await?
            .unwrap_or_default();
        let comparison = alembic::compare(&project.graph, &rows);
        return Ok(judge_alembic(
            project,
            comparison,
            &settings.alembic_version_table,
        ));
    }
    if let Some(fingerprint) = &tool.fingerprint {
        let last = db.last_fingerprint(&settings.history_table).await?;
        return Ok(if last.as_deref() == Some(fingerprint.as_str()) {
            Assessment {
                run: false,
                detail: "unchanged since its last success (STARTGATE_MIGRATE_FINGERPRINT)"
                    .to_string(),
                alembic: None,
                refusal: None,
            }
        } else {
            Assessment {
                run: true,
                detail: match last {
                    None => "no success recorded yet".to_string(),
                    Some(_) => "the fingerprinted files or the command changed".to_string(),
                },
                alembic: None,
                refusal: None,
            }
        });
    }
    Ok(Assessment {
        run: true,
        detail: "runs on every start (no fingerprint, no Alembic config)".to_string(),
        alembic: None,
        refusal: None,
    })
}

/// The pure decision on an Alembic comparison.
pub fn judge_alembic(project: &AlembicProject, comparison: Comparison, table: &str) -> Assessment {
    let heads = join(&comparison.heads);
    let (run, detail, refusal) = if !comparison.future.is_empty() {
        tracing::warn!(
            event = "migrations.future",
            "the database is at Alembic revision(s) {} that no revision file of {} defines \
             (future: a newer deploy applied them); the migrate command is not run, since \
             Alembic cannot upgrade from a revision it does not know",
            join(&comparison.future),
            project.config
        );
        (
            false,
            format!("future revision(s) {} in {table}", join(&comparison.future)),
            None,
        )
    } else if comparison.up_to_date() {
        (false, format!("Alembic is at its head(s) {heads}"), None)
    } else if comparison.heads.len() > 1 && project.target == Target::Head {
        (
            true,
            format!("{} heads", comparison.heads.len()),
            Some(format!(
                "the Alembic project {} has {} heads ({heads}) and the migrate command upgrades \
                 to `head`, which Alembic refuses with several heads: merge them (`alembic merge \
                 heads`), or upgrade to `heads` or `LABEL@head`",
                project.config,
                comparison.heads.len()
            )),
        )
    } else {
        let pending = match comparison.pending {
            1 => "1 Alembic revision pending".to_string(),
            n => format!("{n} Alembic revisions pending"),
        };
        (true, pending, None)
    };
    Assessment {
        run,
        detail,
        alembic: Some(comparison),
        refusal,
    }
}

/// The command as `status` shows it, and the refusal `init` would meet.
pub fn report(
    tool: &Tool,
    assessment: Assessment,
    settings: &Settings,
) -> (crate::report::CommandJson, Option<String>) {
    let alembic = match (&tool.alembic, assessment.alembic) {
        (Some(project), Some(c)) => Some(crate::report::AlembicJson {
            config: project.config.clone(),
            version_table: settings.alembic_version_table.clone(),
            current: c.current.into_iter().collect(),
            heads: c.heads.into_iter().collect(),
            pending: c.pending,
            future: c.future.into_iter().collect(),
        }),
        _ => None,
    };
    (
        crate::report::CommandJson {
            command: redact::mask(&tool.command).into_owned(),
            next: match (assessment.run, &tool.alembic, &tool.fingerprint) {
                (false, _, _) => "skip",
                (true, None, None) => "always",
                (true, _, _) => "run",
            },
            detail: assessment.detail,
            alembic,
        },
        assessment.refusal,
    )
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The command's application name, `startgate-migrate/<run id>`: the run id starts with the
/// migration lock's key (so that cleaning up after an earlier run never touches another app's
/// command, which migrates under another key) and ends with a part unique among the replicas
/// of a deploy (host, pid and time); 43 bytes, within PostgreSQL's 63.
pub fn application_name(key: LockKey) -> String {
    format!("{}{}", leftover_prefix(key), run_id())
}

/// What the application names of every run of the command under `key` start with.
pub fn leftover_prefix(key: LockKey) -> String {
    format!("{APP_PREFIX}{:016x}-", key.0 as u64)
}

fn run_id() -> String {
    use sha2::{Digest, Sha256};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = Sha256::digest(format!(
        "{}:{}:{now}",
        crate::run::host_name(),
        std::process::id()
    ));
    crate::migrate::source::hex(&digest[..6])
}

/// Terminates, under the lock, the sessions an earlier run's command left (its startgate
/// died on a node that vanished, say): they may hold locks the new run needs.
pub async fn end_leftovers<B: Backend>(
    db: &mut B,
    key: LockKey,
    application_name: &str,
) -> Result<(), Error> {
    for session in db
        .terminate_leftover_sessions(&leftover_prefix(key), application_name)
        .await?
    {
        tracing::warn!(
            event = "migrate.leftover",
            pid = session.pid,
            "terminated a session left by an earlier run's migrate command: {session}"
        );
    }
    Ok(())
}

/// What a successful run did, for the summary.
#[derive(Debug)]
pub struct Ran {
    pub elapsed: Duration,
}

/// Runs the command, under the lock, bounded by `STARTGATE_MIGRATION_TIMEOUT`; records its
/// success in the command table.
pub async fn run<B: Backend>(
    db: &mut B,
    tool: &Tool,
    settings: &Settings,
    key: LockKey,
    application_name: &str,
    stop: &StopToken,
) -> Result<Ran, Error> {
    if !db.holds_lock(key).await? {
        return Err(CommandError::LockLost.into());
    }
    let env = environment(db, settings, application_name);
    let started = Instant::now();
    tracing::info!(
        event = "migrate.command",
        application_name,
        "running the migrate command `{}`",
        redact::mask(&tool.command)
    );
    let mut running = command::start(&tool.command, &env).map_err(CommandError::from)?;
    let server_port = db.info().port;
    let deadline = tokio::time::Instant::now() + settings.migration_timeout;
    let mut watch = Watch::new(application_name, settings);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            status = running.wait() => break Ok(status),
            () = tokio::time::sleep_until(deadline) => break Err(None),
            stop = stop.wait() => break Err(Some(stop)),
            _ = ticks.tick() => {
                watch.ports.extend(running.client_ports(server_port));
                watch.look(db, started.elapsed()).await;
            }
        }
    };
    let masked = redact::mask(&tool.command).into_owned();
    match ended {
        Ok(Ok(status)) if status.success() => {
            running.finish().await;
            let elapsed = started.elapsed();
            db.record_command_run(
                &settings.history_table,
                &CommandRun {
                    command: &tool.command,
                    fingerprint: tool.fingerprint.as_deref(),
                    execution_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    applied_by: &crate::run::host_name(),
                },
            )
            .await?;
            Ok(Ran { elapsed })
        }
        Ok(Ok(status)) => {
            let stderr = running.finish().await;
            Err(CommandError::Failed {
                command: masked,
                how: command::describe_status(status),
                stderr,
            }
            .into())
        }
        Ok(Err(e)) => {
            let _ = running.finish().await;
            Err(Error::Internal(format!(
                "waiting for the migrate command failed: {e}"
            )))
        }
        Err(stopped) => {
            watch.ports.extend(running.client_ports(server_port));
            let terminated = halt(db, &mut running, &watch, settings, started.elapsed()).await;
            let stderr = running.finish().await;
            Err(match stopped {
                None => CommandError::TimedOut {
                    command: masked,
                    limit: settings.migration_timeout,
                    terminated,
                    stderr,
                },
                Some(stop) => CommandError::Interrupted {
                    command: masked,
                    stop,
                    terminated,
                },
            }
            .into())
        }
    }
}

/// The command's environment on top of startgate's own: its application name, the server
/// settings (`PGOPTIONS`, after the caller's own, so that startgate's timeouts win), and the
/// direct URL as `DATABASE_URL` when `STARTGATE_DATABASE_URL` is set.
fn environment<B: Backend>(
    db: &B,
    settings: &Settings,
    application_name: &str,
) -> Vec<(String, String)> {
    let limits = CommandLimits {
        lock_timeout: settings.lock_timeout,
        statement_timeout: settings.statement_timeout,
    };
    let mut env = vec![("PGAPPNAME".to_string(), application_name.to_string())];
    for (key, value) in db.command_environment(&limits) {
        let value = match std::env::var(&key) {
            Ok(theirs) if key == "PGOPTIONS" && !theirs.trim().is_empty() => {
                format!("{theirs} {value}")
            }
            _ => value,
        };
        env.push((key, value));
    }
    if let Some(url) = &settings.direct_database_url {
        env.push(("DATABASE_URL".to_string(), url.expose().to_string()));
    }
    env
}

/// What is known of a running command's sessions.
struct Watch<'a> {
    application_name: &'a str,
    /// Every client address and port the command's group was seen with.
    ports: BTreeSet<(std::net::IpAddr, u16)>,
    /// Sessions already warned about.
    warned: BTreeSet<i64>,
    statement_timeout: Duration,
}

impl<'a> Watch<'a> {
    fn new(application_name: &'a str, settings: &Settings) -> Watch<'a> {
        Watch {
            application_name,
            ports: BTreeSet::new(),
            warned: BTreeSet::new(),
            statement_timeout: settings.statement_timeout,
        }
    }

    fn which(&self, ports: &'a [(std::net::IpAddr, u16)], age: Duration) -> CommandSessions<'a> {
        CommandSessions {
            application_name: self.application_name,
            client_ports: ports,
            started_within: age,
        }
    }

    /// Warns, once per session, about a session of the command that runs without the
    /// timeouts: one that ignored `PGAPPNAME` (and so, most likely, `PGOPTIONS`), or one whose
    /// statement has outlived `statement_timeout`.
    async fn look<B: Backend>(&mut self, db: &mut B, age: Duration) {
        let ports: Vec<(std::net::IpAddr, u16)> = self.ports.iter().copied().collect();
        let sessions = match db.command_sessions(&self.which(&ports, age)).await {
            Ok(sessions) => sessions,
            Err(e) => {
                tracing::debug!(error = %e, "could not look at the migrate command's sessions");
                return;
            }
        };
        for session in sessions {
            if let Some(why) =
                without_timeouts(&session, self.application_name, self.statement_timeout)
                && self.warned.insert(session.pid)
            {
                tracing::warn!(
                    event = "migrate.no_timeouts",
                    pid = session.pid,
                    "a session of the migrate command runs without startgate's lock_timeout and \
                     statement_timeout ({why}): only STARTGATE_MIGRATION_TIMEOUT bounds it; {session}"
                );
            }
        }
    }
}

/// Why a command's session looks like it runs without the timeouts, if it does.
pub fn without_timeouts(
    session: &CommandSession,
    application_name: &str,
    statement_timeout: Duration,
) -> Option<String> {
    if session.application_name != application_name {
        return Some(
            "its driver ignored PGAPPNAME, so it most likely ignores PGOPTIONS too".to_string(),
        );
    }
    let limit = i64::try_from(statement_timeout.as_millis()).unwrap_or(i64::MAX);
    match session.running_ms {
        Some(ms) if limit > 0 && ms > limit.saturating_add(1000) => Some(format!(
            "its statement has run for {ms} ms, longer than statement_timeout"
        )),
        _ => None,
    }
}

/// Stops a command that timed out or was interrupted: SIGTERM to its group, its server sessions
/// terminated at once (a statement must not run on holding locks), SIGKILL after the grace,
/// and its sessions terminated again (any opened in between). Returns the sessions ended.
async fn halt<B: Backend>(
    db: &mut B,
    running: &mut Running,
    watch: &Watch<'_>,
    settings: &Settings,
    age: Duration,
) -> Vec<String> {
    let ports: Vec<(std::net::IpAddr, u16)> = watch.ports.iter().copied().collect();
    let which = watch.which(&ports, age + settings.kill_grace);
    running.signal(libc::SIGTERM);
    let mut ended = terminate(db, &which).await;
    running.stop(settings.kill_grace).await;
    ended.extend(terminate(db, &which).await);
    ended
}

async fn terminate<B: Backend>(db: &mut B, which: &CommandSessions<'_>) -> Vec<String> {
    match db.terminate_command_sessions(which).await {
        Ok(sessions) => sessions
            .into_iter()
            .map(|session| {
                tracing::warn!(
                    event = "migrate.terminated",
                    pid = session.pid,
                    "terminated the migrate command's server session: {session}"
                );
                session.to_string()
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not terminate the migrate command's sessions");
            Vec::new()
        }
    }
}

/// After the command: for Alembic, the version table must hold the heads (future revisions
/// aside); otherwise exit 8.
pub async fn check_after<B: Backend>(
    db: &mut B,
    tool: &Tool,
    settings: &Settings,
) -> Result<Option<Comparison>, Error> {
    let Some(project) = &tool.alembic else {
        return Ok(None);
    };
    let rows = db
        .read_alembic_versions(&settings.alembic_version_table)
        .await?
        .unwrap_or_default();
    let comparison = alembic::compare(&project.graph, &rows);
    let known: BTreeSet<String> = comparison
        .current
        .difference(&comparison.future)
        .cloned()
        .collect();
    if project.target.upgrades_to_heads() && known != comparison.heads {
        return Err(Error::Verify(vec![format!(
            "after the migrate command, Alembic's {} table holds {} but the revision files' \
             head(s) are {}",
            settings.alembic_version_table,
            if known.is_empty() {
                "no revision".to_string()
            } else {
                join(&known)
            },
            join(&comparison.heads)
        )]));
    }
    Ok(Some(comparison))
}
