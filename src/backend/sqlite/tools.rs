//! Other tools' tables in a SQLite database: Alembic's version table (the fast path of a
//! migrate command), the table of the migrate command's successful runs
//! (`<history table>_commands`, as on PostgreSQL), and the histories `startgate baseline
//! --from TOOL` reads (sqlx, dbmate, golang-migrate and Flyway all have SQLite drivers and
//! keep the same tables there; their rows are understood in [`crate::backend::foreign`]).
//!
//! A table that does not exist is looked up in `sqlite_master` first, rather than recognised
//! from an error message.

use sqlx::Row;

use super::{NOW, Sqlite, describe, query_error, quote_ident, table_name};
use crate::backend::foreign::{ForeignRow, interpret, truthy};
use crate::backend::{BackendError, CommandRun, ForeignHistory, ForeignTool};
use crate::config::HistoryTable;
use crate::redact;

/// The command table beside the history table: `<table>_commands`.
fn commands_table(history: &HistoryTable) -> Result<String, BackendError> {
    Ok(format!("{}_commands", table_name(history)?))
}

impl Sqlite {
    /// The columns of `table`, when it exists.
    async fn columns_of(&mut self, table: &str) -> Result<Option<Vec<String>>, BackendError> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        let what = format!("reading the columns of {table}");
        let rows = sqlx::query("SELECT name FROM pragma_table_info(?1)")
            .bind(table)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| query_error(&what, &e))
    }

    pub(super) async fn alembic_versions(
        &mut self,
        table: &str,
    ) -> Result<Option<Vec<String>>, BackendError> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        let what = format!("reading Alembic's {table} table");
        let sql = format!("SELECT version_num FROM {}", quote_ident(table));
        let rows = sqlx::query(&sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| query_error(&what, &e))
    }

    pub(super) async fn read_last_fingerprint(
        &mut self,
        history: &HistoryTable,
    ) -> Result<Option<String>, BackendError> {
        let table = commands_table(history)?;
        if !self.table_exists(&table).await? {
            return Ok(None);
        }
        let what = format!("reading the command table {table}");
        let sql = format!(
            "SELECT fingerprint FROM {} ORDER BY id DESC LIMIT 1",
            quote_ident(&table)
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        match rows.first() {
            Some(row) => row
                .try_get::<Option<String>, _>(0)
                .map_err(|e| query_error(&what, &e)),
            None => Ok(None),
        }
    }

    pub(super) async fn write_command_run(
        &mut self,
        history: &HistoryTable,
        run: &CommandRun<'_>,
    ) -> Result<(), BackendError> {
        let table = commands_table(history)?;
        let what = format!("recording the migrate command's run in {table}");
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
               id integer PRIMARY KEY AUTOINCREMENT, \
               command text NOT NULL, \
               fingerprint text, \
               succeeded_at text NOT NULL DEFAULT ({NOW}), \
               execution_ms integer NOT NULL, \
               applied_by text NOT NULL, \
               startgate_version text NOT NULL)",
            t = quote_ident(&table)
        );
        let insert = format!(
            "INSERT INTO {} (command, fingerprint, execution_ms, applied_by, startgate_version) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            quote_ident(&table)
        );
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        let written = async {
            sqlx::raw_sql(&create).execute(&mut self.conn).await?;
            sqlx::query(&insert)
                .bind(redact::mask(run.command).into_owned())
                .bind(run.fingerprint)
                .bind(i64::try_from(run.execution_ms).unwrap_or(i64::MAX))
                .bind(run.applied_by)
                .bind(env!("CARGO_PKG_VERSION"))
                .execute(&mut self.conn)
                .await?;
            sqlx::raw_sql("COMMIT").execute(&mut self.conn).await
        }
        .await;
        if let Err(e) = written {
            self.rollback_quietly().await;
            return Err(query_error(&what, &e));
        }
        Ok(())
    }

    pub(super) async fn foreign_history(
        &mut self,
        tool: ForeignTool,
    ) -> Result<ForeignHistory, BackendError> {
        let Some(columns) = self.columns_of(tool.table()).await? else {
            return Err(BackendError::MissingTable {
                table: tool.table().to_string(),
                hint: format!(
                    "is --from {} right? check DATABASE_URL names the right file",
                    tool.as_str()
                ),
            });
        };
        if tool == ForeignTool::GolangMigrate
            && !columns.iter().any(|c| c.eq_ignore_ascii_case("dirty"))
        {
            return Err(BackendError::MissingTable {
                table: "schema_migrations with a dirty column".to_string(),
                hint: "this schema_migrations looks like dbmate's: is --from dbmate right?"
                    .to_string(),
            });
        }
        // Every cell as text, so that a tool's column types (integer, varchar, boolean as 0/1)
        // do not matter.
        let sql = match tool {
            ForeignTool::Sqlx => {
                "SELECT CAST(version AS TEXT), CAST(success AS TEXT), NULL \
                 FROM _sqlx_migrations ORDER BY version"
            }
            ForeignTool::Dbmate => {
                "SELECT CAST(version AS TEXT), 'true', NULL FROM schema_migrations ORDER BY version"
            }
            ForeignTool::GolangMigrate => {
                "SELECT CAST(version AS TEXT), CAST(dirty AS TEXT), NULL FROM schema_migrations"
            }
            ForeignTool::Flyway => {
                "SELECT CAST(version AS TEXT), CAST(success AS TEXT), CAST(type AS TEXT) \
                 FROM flyway_schema_history WHERE version IS NOT NULL ORDER BY installed_rank"
            }
        };
        let what = format!("reading {}'s history table {}", tool.as_str(), tool.table());
        let rows = sqlx::query(sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        let cell = |row: &sqlx::sqlite::SqliteRow, i: usize| {
            row.try_get::<Option<String>, _>(i)
                .map_err(|e| BackendError::BadHistory {
                    table: tool.table().to_string(),
                    problem: describe(&e),
                })
        };
        let rows = rows
            .iter()
            .map(|row| {
                Ok(ForeignRow {
                    version: cell(row, 0)?,
                    flag: truthy(cell(row, 1)?.as_deref()),
                    kind: cell(row, 2)?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        interpret(tool, &rows)
    }
}
