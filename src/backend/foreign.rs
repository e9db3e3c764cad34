//! Other migration tools' history rows, as every engine reads them for `startgate baseline
//! --from TOOL`: the pure reading of rows into a [`ForeignHistory`], shared by the backends
//! (each one only queries its tables, every cell as text).
//!
//! - sqlx: `_sqlx_migrations(version, description, installed_on, success, checksum,
//!   execution_time)`, one row per version; `success = false` is a failed migration.
//! - dbmate: `schema_migrations(version primary key)`, one row per version.
//! - golang-migrate: `schema_migrations(version, dirty)`, one row: the current version.
//! - Flyway: `flyway_schema_history(installed_rank, version, description, type, script,
//!   checksum, installed_by, installed_on, execution_time, success)`; rows without a version are
//!   repeatable migrations, `DELETE` rows mark entries removed by `flyway repair`, and a
//!   `BASELINE` row means every version up to it counts as applied.

use super::{BackendError, ForeignHistory, ForeignTool};
use crate::migrate::Version;

/// One row of another tool's history, in the order the tool wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRow {
    pub version: Option<String>,
    /// `success` (sqlx, Flyway; always true for dbmate), or `dirty` (golang-migrate).
    pub flag: bool,
    /// Flyway's `type` (`SQL`, `BASELINE`, `DELETE`…).
    pub kind: Option<String>,
}

/// Whether a cell read as text is true, as the engines print booleans (`true`, `t`, `1`).
pub fn truthy(cell: Option<&str>) -> bool {
    matches!(
        cell.map(|c| c.trim().to_ascii_lowercase()).as_deref(),
        Some("true" | "t" | "1")
    )
}

fn bad(tool: ForeignTool, problem: String) -> BackendError {
    BackendError::BadHistory {
        table: tool.table().to_string(),
        problem,
    }
}

fn version(tool: ForeignTool, text: &str) -> Result<Version, BackendError> {
    Version::parse(text.trim()).ok_or_else(|| {
        bad(
            tool,
            format!("version {text:?} is not digits with optional dots"),
        )
    })
}

/// What `rows` of `tool`'s table say is applied.
pub fn interpret(tool: ForeignTool, rows: &[ForeignRow]) -> Result<ForeignHistory, BackendError> {
    if tool == ForeignTool::GolangMigrate {
        let [row] = rows else {
            return Err(bad(
                tool,
                format!(
                    "expected golang-migrate's single row, found {} rows (is this dbmate's table? use --from dbmate)",
                    rows.len()
                ),
            ));
        };
        return Ok(ForeignHistory::Current {
            version: version(tool, row.version.as_deref().unwrap_or_default())?,
            dirty: row.flag,
        });
    }

    // Rows in the order the tool wrote them: a later row for a version overrides an earlier
    // one (Flyway's `DELETE` un-applies a version that `flyway repair` removed; a success after
    // a failure means the version was fixed and applied).
    let mut latest: Vec<(Version, Option<String>, bool)> = Vec::new();
    let mut baseline = None;
    for row in rows {
        let v = row.version.clone().unwrap_or_default();
        let kind = row.kind.as_deref().unwrap_or_default();
        let version = version(tool, &v)?;
        if tool == ForeignTool::Flyway && kind == "BASELINE" {
            baseline = Some(version);
            continue;
        }
        let state = if tool == ForeignTool::Flyway && kind == "DELETE" {
            None
        } else {
            Some(v)
        };
        latest.retain(|(seen, _, _)| *seen != version);
        latest.push((version, state, row.flag));
    }
    let mut applied = Vec::new();
    let mut failed = Vec::new();
    for (version, written, success) in latest {
        match (written, success) {
            (None, _) => {}
            (Some(_), true) => applied.push(version),
            (Some(text), false) => failed.push(text),
        }
    }
    Ok(ForeignHistory::Versions {
        applied,
        failed,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str, flag: bool, kind: &str) -> ForeignRow {
        ForeignRow {
            version: Some(version.to_string()),
            flag,
            kind: Some(kind.to_string()).filter(|k| !k.is_empty()),
        }
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn later_rows_override_earlier_ones() {
        let rows = [
            row("1", true, "BASELINE"),
            row("2", false, "SQL"),
            row("2", true, "SQL"),
            row("3", true, "SQL"),
            row("3", true, "DELETE"),
            row("4", false, "SQL"),
        ];
        assert_eq!(
            interpret(ForeignTool::Flyway, &rows).unwrap(),
            ForeignHistory::Versions {
                applied: vec![v("2")],
                failed: vec!["4".to_string()],
                baseline: Some(v("1")),
            }
        );
    }

    #[test]
    fn golang_migrate_has_one_row() {
        assert_eq!(
            interpret(ForeignTool::GolangMigrate, &[row("7", true, "")]).unwrap(),
            ForeignHistory::Current {
                version: v("7"),
                dirty: true
            }
        );
        let two = interpret(
            ForeignTool::GolangMigrate,
            &[row("1", false, ""), row("2", false, "")],
        )
        .unwrap_err();
        assert!(two.to_string().contains("found 2 rows"), "{two}");
        let bad = interpret(ForeignTool::Dbmate, &[row("v1", true, "")]).unwrap_err();
        assert!(bad.to_string().contains("\"v1\" is not digits"), "{bad}");
    }

    #[test]
    fn booleans_as_the_engines_print_them() {
        for (cell, want) in [
            (Some("true"), true),
            (Some("t"), true),
            (Some("1"), true),
            (Some("TRUE"), true),
            (Some("false"), false),
            (Some("0"), false),
            (None, false),
        ] {
            assert_eq!(truthy(cell), want, "{cell:?}");
        }
    }
}
