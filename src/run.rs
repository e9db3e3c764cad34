//! The orchestration of each command: settings in, phases through [`Progress`], backends through
//! the [`Backend`] trait, an exit status out. Generic over the backend, so a new engine changes
//! nothing here.
//!
//! Order matters and is the same for every command: everything that can be checked without a
//! side effect (settings, migration files) is checked first, then the database is touched.

use crate::backend::postgres::Postgres;
use crate::backend::{Backend, TableName};
use crate::config::Settings;
use crate::dburl::{self, DatabaseUrl};
use crate::exit::Error;
use crate::migrate::plan::{self, PlanOptions};
use crate::migrate::source::{self, Loaded};
use crate::phase::Phase;
use crate::progress::Progress;
use crate::report::StatusReport;
use crate::wait::wait_for_database;

/// `startgate status [--json]`: prints the plan and returns 0 (up to date), 9 (only pending
/// migrations) or 7 (inconsistent).
pub async fn status(settings: &Settings, json: bool) -> Result<u8, Error> {
    let url = database_url(settings)?;
    let local = load_migrations(settings)?;
    match url.backend() {
        dburl::Backend::Postgres => status_on::<Postgres>(settings, url, &local, json).await,
        dburl::Backend::Sqlite => Err(sqlite_not_yet()),
    }
}

async fn status_on<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    local: &Loaded,
    json: bool,
) -> Result<u8, Error> {
    let progress = Progress::new();
    let mut db: B = connect(settings, url, &progress).await?;
    let rows = db
        .read_history(&settings.history_table)
        .await?
        .unwrap_or_default();
    let plan = plan::plan(
        &local.migrations,
        &rows,
        PlanOptions {
            out_of_order: settings.out_of_order,
        },
    );
    let report = StatusReport::new(
        &plan,
        &local.migrations,
        db.info(),
        TableName(&settings.history_table).to_string(),
        settings.migrations.display().to_string(),
    );
    db.close().await;
    let text = if json {
        report.to_json()
    } else {
        report.to_text()
    };
    print!("{text}");
    Ok(report.exit_code)
}

/// The URL for commands that migrate: `STARTGATE_DATABASE_URL`, else `DATABASE_URL`.
fn database_url(settings: &Settings) -> Result<&DatabaseUrl, Error> {
    settings
        .migration_database_url()
        .map_err(|e| Error::Usage(e.to_string()))
}

fn sqlite_not_yet() -> Error {
    Error::Usage(
        "sqlite:// URLs are not supported by this build yet; use a postgres:// URL".to_string(),
    )
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

/// Waits for the database (phase `waiting_for_database`), recording the outcome.
async fn connect<B: Backend>(
    settings: &Settings,
    url: &DatabaseUrl,
    progress: &Progress,
) -> Result<B, Error> {
    progress.enter(Phase::WaitingForDatabase);
    match wait_for_database::<B>(url, &application_name(), settings.db_wait_timeout).await {
        Ok(db) => {
            let info = db.info();
            progress.done(format!(
                "connected to {}{}",
                info.url,
                info.server_version
                    .as_deref()
                    .map(|v| format!(" (server {v})"))
                    .unwrap_or_default()
            ));
            Ok(db)
        }
        Err(e) => {
            let error = Error::from(e);
            progress.fail(error.to_string(), i32::from(error.exit_code()));
            Err(error)
        }
    }
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
