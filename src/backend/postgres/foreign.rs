//! Other migration tools' history tables, read for `startgate baseline --from TOOL`, as each tool
//! writes them (found through the session's `search_path`, as the tools find them). The rows
//! are read as text here and understood in [`crate::backend::foreign`]:
//!
//! - sqlx: `_sqlx_migrations(version bigint, description, installed_on, success bool, checksum,
//!   execution_time)`, one row per version; `success = false` is a failed migration.
//! - dbmate: `schema_migrations(version varchar primary key)`, one row per version.
//! - golang-migrate: `schema_migrations(version bigint, dirty bool)`, one row: the current version.
//! - Flyway: `flyway_schema_history(installed_rank, version, description, type, script, checksum,
//!   installed_by, installed_on, execution_time, success)`; rows without a version are repeatable
//!   migrations, `DELETE` rows mark entries removed by `flyway repair`, and a `BASELINE` row means
//!   every version up to it counts as applied.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use super::{describe, sqlstate, sqlstate_of};
use crate::backend::foreign::{ForeignRow, interpret, truthy};
use crate::backend::{BackendError, ForeignHistory, ForeignTool};

fn query_error(tool: ForeignTool, e: &sqlx::Error) -> BackendError {
    if tool == ForeignTool::GolangMigrate
        && matches!(sqlstate_of(e).as_deref(), Some(sqlstate::UNDEFINED_COLUMN))
    {
        return BackendError::MissingTable {
            table: "schema_migrations with a dirty column".to_string(),
            hint: "this schema_migrations looks like dbmate's: is --from dbmate right?".to_string(),
        };
    }
    if matches!(sqlstate_of(e).as_deref(), Some(sqlstate::UNDEFINED_TABLE)) {
        return BackendError::MissingTable {
            table: tool.table().to_string(),
            hint: format!(
                "is --from {} right? check DATABASE_URL and search_path",
                tool.as_str()
            ),
        };
    }
    BackendError::Query {
        what: format!("reading {}'s history table {}", tool.as_str(), tool.table()),
        message: describe(e),
    }
}

fn text(row: &PgRow, i: usize, tool: ForeignTool) -> Result<Option<String>, BackendError> {
    row.try_get::<Option<String>, _>(i)
        .map_err(|e| BackendError::BadHistory {
            table: tool.table().to_string(),
            problem: describe(&e),
        })
}

pub async fn read(
    conn: &mut PgConnection,
    tool: ForeignTool,
) -> Result<ForeignHistory, BackendError> {
    // Everything is read as text, so that a tool's column types (bigint, varchar) do not matter.
    let sql = match tool {
        ForeignTool::Sqlx => {
            "SELECT version::text, success::text, NULL::text FROM _sqlx_migrations ORDER BY version"
        }
        ForeignTool::Dbmate => {
            "SELECT version::text, 'true', NULL::text FROM schema_migrations ORDER BY version"
        }
        ForeignTool::GolangMigrate => {
            "SELECT version::text, dirty::text, NULL::text FROM schema_migrations"
        }
        ForeignTool::Flyway => {
            "SELECT version::text, success::text, type::text FROM flyway_schema_history \
             WHERE version IS NOT NULL ORDER BY installed_rank"
        }
    };
    let rows = sqlx::raw_sql(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| query_error(tool, &e))?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok(ForeignRow {
                version: text(row, 0, tool)?,
                flag: truthy(text(row, 1, tool)?.as_deref()),
                kind: text(row, 2, tool)?,
            })
        })
        .collect::<Result<Vec<_>, BackendError>>()?;
    interpret(tool, &rows)
}
