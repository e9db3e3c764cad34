//! The command line: subcommands and flags (clap), then settings, secrets, logging and the
//! runtime, then the command; every outcome becomes the documented exit status here and nowhere
//! else.
//!
//! Settings come only from the environment (containers and platforms configure through it);
//! `--help` lists every one of them with its variable and default, from the same table the
//! parser uses (`crate::config::SETTINGS`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Settings};
use crate::exit::{Error, code};
use crate::{logging, redact, run, termination};

#[derive(Debug, Parser)]
#[command(
    name = "startgate",
    version,
    about = "The startup gate for database-backed apps: wait for the database, migrate under a lock, \
             verify the schema, start and probe the app, explain hangs.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for the database, take the migration lock, apply pending migrations, verify, then
    /// exit (Kubernetes init container, Render pre-deploy command, Helm hook Job).
    Init,
    /// The steps of init, then start CMD, supervise it and probe it until it is ready; serve
    /// the endpoint throughout; exit with CMD's exit status (Render start command, Docker
    /// ENTRYPOINT, PID 1).
    Run {
        /// The app's command and its arguments, after `--`.
        #[arg(
            value_name = "CMD",
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Probe an app in another container and serve the endpoint until SIGTERM (Kubernetes
    /// native sidecar). No database work.
    Watch,
    /// Show the plan: applied, pending, out-of-order, changed, missing, future and failed
    /// migrations. Exit 0 when up to date, 9 when only pending migrations remain, 7 when the
    /// history is inconsistent.
    Status {
        /// Print a stable JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// After an operator has dealt by hand with what a failed no-transaction migration left:
    /// clear the failure so the next run retries from the failed statement, or with --skip
    /// count that statement as done.
    Repair {
        /// The migration's version, as in its file name (e.g. 0007).
        // Its own id: `version` is taken by the `--version` flag every subcommand inherits.
        #[arg(id = "migration_version", value_name = "VERSION")]
        version: String,
        /// Count the failed statement as done: the next run resumes after it.
        #[arg(long)]
        skip: bool,
    },
    /// Take a schema backup now (under the migration lock), into STARTGATE_BACKUP_DIR.
    Backup,
    /// Verify the live schema: STARTGATE_REQUIRE, STARTGATE_EXPECT_SCHEMA, and no INVALID
    /// index. Exit 0, or 8 listing every difference.
    Verify,
    /// Print the live schema snapshot (with --json, the format STARTGATE_EXPECT_SCHEMA reads).
    Schema {
        /// Print the stable, sorted JSON document instead of the readable form.
        #[arg(long)]
        json: bool,
    },
    /// Show who holds the migration lock; with --force, terminate that session.
    Unlock {
        /// Terminate the session holding the lock (its transaction is rolled back).
        #[arg(long)]
        force: bool,
    },
    /// Record migrations as applied without running them: every one up to VERSION, or those
    /// another tool's history lists.
    Baseline {
        /// Read another tool's history: sqlx, dbmate, flyway or golang-migrate.
        #[arg(long, value_name = "TOOL", value_parser = ["sqlx", "dbmate", "flyway", "golang-migrate"])]
        from: Option<String>,
        /// Record every migration up to this version.
        #[arg(id = "migration_version", value_name = "VERSION")]
        version: Option<String>,
    },
}

/// The clap command with the settings table appended to every `--help`.
fn command() -> clap::Command {
    let settings = config::settings_help();
    Cli::command()
        .after_long_help(settings.clone())
        .mut_subcommands(|sub| sub.after_long_help(settings.clone()))
}

/// Runs startgate and returns its exit status.
pub fn main() -> ExitCode {
    // The guard between startgate and a migrate command: before clap, settings and logging,
    // none of which it needs.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::supervise::guard::SUBCOMMAND)
    {
        return ExitCode::from(crate::supervise::guard::main(&args[2..]));
    }
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` land here too, and exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::SUCCESS
            });
        }
    };

    // Every setting is read and checked before any side effect.
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            // Log in the format the operator asked for, when that much can be read, so that a
            // log shipper sees one structured event rather than loose lines.
            let format = match std::env::var("STARTGATE_LOG_FORMAT")
                .as_deref()
                .map(str::trim)
            {
                Ok("json") => config::LogFormat::Json,
                Ok("text") => config::LogFormat::Text,
                _ => config::LogFormat::Auto,
            };
            logging::init("info", format);
            tracing::error!(event = "exit", exit_code = code::USAGE, "{e}");
            termination::write(&termination::from_env(), &e.to_string());
            return ExitCode::from(code::USAGE);
        }
    };
    redact::register(settings.secrets());
    logging::init(&settings.log, settings.log_format);
    for warning in &settings.warnings {
        tracing::warn!(event = "settings", "{warning}");
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&Error::Internal(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Status { json } => run::status(&settings, json).await,
            Command::Init => run::init(&settings).await,
            Command::Run { command } => run::run(&settings, &command).await,
            Command::Watch => run::watch(&settings).await,
            Command::Backup => run::backup(&settings).await,
            Command::Verify => run::verify(&settings).await,
            Command::Schema { json } => run::schema(&settings, json).await,
            Command::Repair { version, skip } => run::repair(&settings, &version, skip).await,
            Command::Unlock { force } => run::unlock(&settings, force).await,
            Command::Baseline { from, version } => {
                run::baseline(&settings, from.as_deref(), version.as_deref()).await
            }
        }
    });
    // Every task that matters has been awaited; an idle blocking-pool thread need not be
    // woken and joined before the process exits (it costs a start half a millisecond).
    runtime.shutdown_background();
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            let code = fail(&e);
            // A stop a signal asked for is no failure to explain.
            if e.stop().is_none() {
                termination::write(&settings.termination_log, &message(&e));
            }
            code
        }
    }
}

/// The error with its causes, as one message.
fn message(error: &Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause = cause.to_string();
        // thiserror's `transparent` and `{source}`-in-message errors would repeat themselves.
        if !message.contains(&cause) {
            message.push_str(&format!(": {cause}"));
        }
        source = cause_of(source);
    }
    message
}

/// Logs the error with its causes (secrets masked) and returns its exit status.
fn fail(error: &Error) -> ExitCode {
    let exit_code = error.exit_code();
    tracing::error!(
        event = "exit",
        exit_code,
        "{}",
        redact::mask(&message(error))
    );
    ExitCode::from(exit_code)
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks argument ids, defaults and conflicts only in debug builds, at parse time;
        // this makes every such mistake a test failure rather than a crash in the field.
        command().debug_assert();
    }

    #[test]
    fn parses_each_subcommand() {
        for (args, expected) in [
            (
                &["startgate", "repair", "0007"][..],
                "Repair { version: \"0007\", skip: false }",
            ),
            (
                &["startgate", "repair", "0007", "--skip"][..],
                "Repair { version: \"0007\", skip: true }",
            ),
            (
                &["startgate", "baseline", "3"][..],
                "Baseline { from: None, version: Some(\"3\") }",
            ),
            (
                &["startgate", "baseline", "--from", "sqlx"][..],
                "Baseline { from: Some(\"sqlx\"), version: None }",
            ),
            (
                &["startgate", "unlock", "--force"][..],
                "Unlock { force: true }",
            ),
            (
                &["startgate", "status", "--json"][..],
                "Status { json: true }",
            ),
            (&["startgate", "init"][..], "Init"),
            (&["startgate", "watch"][..], "Watch"),
            (
                &[
                    "startgate",
                    "run",
                    "--",
                    "python",
                    "-m",
                    "app",
                    "--port",
                    "8000",
                ][..],
                "Run { command: [\"python\", \"-m\", \"app\", \"--port\", \"8000\"] }",
            ),
            (
                &["startgate", "run", "uvicorn", "app:app"][..],
                "Run { command: [\"uvicorn\", \"app:app\"] }",
            ),
            (&["startgate", "backup"][..], "Backup"),
            (&["startgate", "verify"][..], "Verify"),
            (
                &["startgate", "schema", "--json"][..],
                "Schema { json: true }",
            ),
        ] {
            let matches = command().try_get_matches_from(args).expect("parses");
            let cli = Cli::from_arg_matches(&matches).expect("converts");
            assert_eq!(format!("{:?}", cli.command), expected);
        }
    }
}
