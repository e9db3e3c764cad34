//! Reads a SQLite database's schema into the engine-neutral [`Snapshot`].
//!
//! **How it reads.** One read transaction (`BEGIN` … `COMMIT`, so every query sees the same
//! state of the file), one query per kind of object over `sqlite_master` and the `pragma_*`
//! table-valued functions joined to `pragma_table_list` (never one query per table): tables,
//! columns, indexes, index columns, foreign keys, views and triggers. Needs SQLite 3.37
//! (`pragma_table_list`); the bundled SQLite is newer.
//!
//! **How SQLite maps onto the model.** SQLite has no schemas: every object is in `main`, which
//! is the one schema listed and every object's schema. Definitions are the `CREATE` statements
//! SQLite keeps in `sqlite_master`, as they were written.
//! - Tables: ordinary and virtual ones (an FTS table's shadow tables are left out: they belong
//!   to it). Columns in table order, with the declared type as written (SQLite's types are
//!   affinities; the declaration is what the app relies on), `NOT NULL`, and the default.
//!   A generated column has `generated` set to `virtual` or `stored`: SQLite does not give its
//!   expression back without parsing the table's `CREATE TABLE`.
//! - Constraints: the primary key, `UNIQUE` constraints and foreign keys. SQLite does not name
//!   them, so they get PostgreSQL's default names (`t_pkey`, `t_a_b_key`, `t_a_fkey`), which
//!   stay the same when a table is rebuilt. `CHECK` constraints are not read (SQLite exposes
//!   them only inside the `CREATE TABLE` text).
//! - Indexes: those made by `CREATE INDEX`, with their statement; the indexes SQLite makes for
//!   a primary key or a `UNIQUE` constraint are the constraints above. Never INVALID.
//! - Triggers on tables, with their statement (a trigger on a view has no table to hang on,
//!   and is left out). Views, with their `CREATE VIEW` statement.
//! - No sequences, enums, extensions, functions or row-level security: SQLite has none
//!   (`AUTOINCREMENT`'s counters are data in `sqlite_sequence`).
//!
//! **What is left out**: SQLite's internal tables (`sqlite_%`), and startgate's history table
//! with its indexes and triggers.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::describe;
use crate::backend::BackendError;
use crate::schema::{Column, Constraint, FORMAT_VERSION, Index, Snapshot, Table, Trigger, View};

/// What a failed snapshot says it was doing.
const WHAT: &str = "reading the schema catalog";

/// SQLite's one schema.
const SCHEMA: &str = "main";

/// The tables of the snapshot: ordinary and virtual tables of `main`, without SQLite's own and
/// without the history table (`?1`). Every query joins its pragma function to this.
const TABLES: &str = "SELECT name FROM pragma_table_list \
     WHERE schema = 'main' AND type IN ('table', 'virtual') \
     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?1 COLLATE NOCASE";

fn error(e: &sqlx::Error) -> BackendError {
    BackendError::Query {
        what: WHAT.to_string(),
        message: describe(e),
    }
}

/// Reads the schema; `history` is startgate's history table (left out).
pub async fn snapshot(
    conn: &mut SqliteConnection,
    history: &str,
    server_version: &str,
) -> Result<Snapshot, BackendError> {
    sqlx::raw_sql("BEGIN")
        .execute(&mut *conn)
        .await
        .map_err(|e| error(&e))?;
    let read = read(conn, history, server_version).await;
    // Read-only: COMMIT and ROLLBACK end it alike.
    if let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
        tracing::debug!(error = %describe(&e), "ending the catalog read failed");
    }
    read
}

async fn fetch(
    conn: &mut SqliteConnection,
    sql: &str,
    history: &str,
) -> Result<Vec<SqliteRow>, BackendError> {
    sqlx::query(sql)
        .bind(history)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| error(&e))
}

fn text(row: &SqliteRow, i: usize) -> Result<Option<String>, BackendError> {
    row.try_get::<Option<String>, _>(i).map_err(|e| error(&e))
}

fn int(row: &SqliteRow, i: usize) -> Result<i64, BackendError> {
    row.try_get::<Option<i64>, _>(i)
        .map(Option::unwrap_or_default)
        .map_err(|e| error(&e))
}

/// One table while it is being read, keyed by its name in [`read`].
struct Building {
    table: Table,
    /// Primary key columns, by their position in the key.
    primary_key: Vec<(i64, String)>,
}

async fn read(
    conn: &mut SqliteConnection,
    history: &str,
    server_version: &str,
) -> Result<Snapshot, BackendError> {
    // SQLite compares names without case (ASCII): so does the map, through lowercase keys.
    let mut tables: BTreeMap<String, Building> = BTreeMap::new();
    for row in fetch(conn, TABLES, history).await? {
        let name = text(&row, 0)?.unwrap_or_default();
        tables.insert(
            name.to_ascii_lowercase(),
            Building {
                table: Table {
                    schema: SCHEMA.to_string(),
                    name,
                    columns: Vec::new(),
                    constraints: Vec::new(),
                    indexes: Vec::new(),
                    triggers: Vec::new(),
                    rls_enabled: false,
                    rls_forced: false,
                    policies: Vec::new(),
                },
                primary_key: Vec::new(),
            },
        );
    }

    // Columns, in table order; `hidden` is 1 for a virtual table's hidden column, 2 and 3 for
    // a generated column (virtual, stored).
    let sql = format!(
        "SELECT t.name, c.name, c.type, c.\"notnull\", c.dflt_value, c.pk, c.hidden \
         FROM ({TABLES}) t JOIN pragma_table_xinfo(t.name, 'main') c ORDER BY t.name, c.cid"
    );
    for row in fetch(conn, &sql, history).await? {
        let Some(building) = tables.get_mut(&key(&row)?) else {
            continue;
        };
        let name = text(&row, 1)?.unwrap_or_default();
        let (pk, hidden) = (int(&row, 5)?, int(&row, 6)?);
        if hidden == 1 {
            continue;
        }
        if pk > 0 {
            building.primary_key.push((pk, name.clone()));
        }
        building.table.columns.push(Column {
            name,
            data_type: text(&row, 2)?.unwrap_or_default(),
            nullable: int(&row, 3)? == 0,
            default: text(&row, 4)?,
            identity: None,
            generated: match hidden {
                2 => Some("virtual".to_string()),
                3 => Some("stored".to_string()),
                _ => None,
            },
        });
    }

    // Index columns first, by index name: the UNIQUE constraints' definitions need them.
    let sql = format!(
        "SELECT t.name, il.name, ii.name FROM ({TABLES}) t \
         JOIN pragma_index_list(t.name, 'main') il \
         JOIN pragma_index_info(il.name, 'main') ii ORDER BY t.name, il.name, ii.seqno"
    );
    let mut index_columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in fetch(conn, &sql, history).await? {
        let index = text(&row, 1)?.unwrap_or_default();
        // An expression has no name.
        let column = text(&row, 2)?.unwrap_or_else(|| "<expression>".to_string());
        index_columns.entry(index).or_default().push(column);
    }

    // `origin`: `c` for CREATE INDEX, `u` for a UNIQUE constraint, `pk` for the primary key.
    let sql = format!(
        "SELECT t.name, il.name, il.\"unique\", il.origin, m.sql FROM ({TABLES}) t \
         JOIN pragma_index_list(t.name, 'main') il \
         LEFT JOIN sqlite_master m ON m.type = 'index' AND m.name = il.name \
         ORDER BY t.name, il.name"
    );
    for row in fetch(conn, &sql, history).await? {
        let Some(building) = tables.get_mut(&key(&row)?) else {
            continue;
        };
        let name = text(&row, 1)?.unwrap_or_default();
        let unique = int(&row, 2)? != 0;
        match text(&row, 3)?.as_deref() {
            Some("u") => {
                let columns = index_columns.get(&name).cloned().unwrap_or_default();
                building.table.constraints.push(Constraint {
                    name: constraint_name(&building.table.name, &columns, "key"),
                    kind: "unique".to_string(),
                    definition: format!("UNIQUE ({})", columns.join(", ")),
                });
            }
            Some("c") => building.table.indexes.push(Index {
                name,
                definition: text(&row, 4)?.unwrap_or_default(),
                unique,
                valid: true,
            }),
            _ => {}
        }
    }

    let sql = format!(
        "SELECT t.name, fk.id, fk.\"table\", fk.\"from\", fk.\"to\", fk.on_update, fk.on_delete \
         FROM ({TABLES}) t JOIN pragma_foreign_key_list(t.name, 'main') fk \
         ORDER BY t.name, fk.id, fk.seq"
    );
    let mut foreign: BTreeMap<(String, i64), ForeignKey> = BTreeMap::new();
    for row in fetch(conn, &sql, history).await? {
        let fk = foreign.entry((key(&row)?, int(&row, 1)?)).or_default();
        fk.parent = text(&row, 2)?.unwrap_or_default();
        fk.from.push(text(&row, 3)?.unwrap_or_default());
        // No `to`: the parent's primary key, implied.
        if let Some(to) = text(&row, 4)? {
            fk.to.push(to);
        }
        fk.on_update = text(&row, 5)?.unwrap_or_default();
        fk.on_delete = text(&row, 6)?.unwrap_or_default();
    }
    for ((table, _), fk) in foreign {
        if let Some(building) = tables.get_mut(&table) {
            let definition = fk.definition();
            building.table.constraints.push(Constraint {
                name: constraint_name(&building.table.name, &fk.from, "fkey"),
                kind: "foreign key".to_string(),
                definition,
            });
        }
    }

    let mut views = Vec::new();
    let rows = fetch(
        conn,
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE type IN ('view', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND tbl_name <> ?1 COLLATE NOCASE ORDER BY name",
        history,
    )
    .await?;
    for row in rows {
        let name = text(&row, 1)?.unwrap_or_default();
        let definition = text(&row, 3)?.unwrap_or_default();
        if text(&row, 0)?.as_deref() == Some("view") {
            views.push(View {
                schema: SCHEMA.to_string(),
                name,
                materialized: false,
                definition,
            });
        } else if let Some(building) =
            tables.get_mut(&text(&row, 2)?.unwrap_or_default().to_ascii_lowercase())
        {
            building.table.triggers.push(Trigger { name, definition });
        }
    }

    let tables = tables
        .into_values()
        .map(|mut building| {
            if !building.primary_key.is_empty() {
                building.primary_key.sort();
                let columns: Vec<String> =
                    building.primary_key.into_iter().map(|(_, c)| c).collect();
                building.table.constraints.push(Constraint {
                    name: format!("{}_pkey", building.table.name),
                    kind: "primary key".to_string(),
                    definition: format!("PRIMARY KEY ({})", columns.join(", ")),
                });
            }
            dedupe_names(&mut building.table.constraints);
            building.table
        })
        .collect();
    let mut snapshot = Snapshot {
        format: FORMAT_VERSION,
        engine: "sqlite".to_string(),
        server_version: server_version.to_string(),
        schemas: vec![SCHEMA.to_string()],
        extensions: Vec::new(),
        enums: Vec::new(),
        sequences: Vec::new(),
        tables,
        views,
        functions: Vec::new(),
    };
    crate::schema::normalise(&mut snapshot);
    Ok(snapshot)
}

/// The lowercase table name in column 0, the key of [`read`]'s map.
fn key(row: &SqliteRow) -> Result<String, BackendError> {
    Ok(text(row, 0)?.unwrap_or_default().to_ascii_lowercase())
}

/// One foreign key, gathered from its rows (one per column).
#[derive(Debug, Default)]
struct ForeignKey {
    parent: String,
    from: Vec<String>,
    to: Vec<String>,
    on_update: String,
    on_delete: String,
}

impl ForeignKey {
    /// `FOREIGN KEY (a) REFERENCES parent(id) ON DELETE CASCADE`, actions only when not the
    /// default.
    fn definition(&self) -> String {
        let mut text = format!(
            "FOREIGN KEY ({}) REFERENCES {}",
            self.from.join(", "),
            self.parent
        );
        if !self.to.is_empty() {
            text.push_str(&format!("({})", self.to.join(", ")));
        }
        for (event, action) in [("UPDATE", &self.on_update), ("DELETE", &self.on_delete)] {
            if !action.is_empty() && !action.eq_ignore_ascii_case("NO ACTION") {
                text.push_str(&format!(" ON {event} {action}"));
            }
        }
        text
    }
}

/// PostgreSQL's default name for a constraint: `<table>_<columns>_<suffix>`.
fn constraint_name(table: &str, columns: &[String], suffix: &str) -> String {
    let mut parts = vec![table.to_string()];
    parts.extend(columns.iter().cloned());
    parts.push(suffix.to_string());
    parts.join("_")
}

/// Makes names unique as PostgreSQL does (`t_a_fkey`, `t_a_fkey1`), in the order of the
/// definitions, so the result does not depend on the order SQLite lists them in.
fn dedupe_names(constraints: &mut [Constraint]) {
    constraints.sort_by(|a, b| (&a.name, &a.definition).cmp(&(&b.name, &b.definition)));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for constraint in constraints.iter_mut() {
        let count = seen.entry(constraint.name.clone()).or_insert(0);
        if *count > 0 {
            constraint.name = format!("{}{}", constraint.name, count);
        }
        *count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_read_as_postgresql_prints_them() {
        let fk = ForeignKey {
            parent: "users".to_string(),
            from: vec!["user_id".to_string()],
            to: vec!["id".to_string()],
            on_update: "NO ACTION".to_string(),
            on_delete: "CASCADE".to_string(),
        };
        assert_eq!(
            fk.definition(),
            "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
        );
        let implied = ForeignKey {
            parent: "t".to_string(),
            from: vec!["a".to_string(), "b".to_string()],
            ..ForeignKey::default()
        };
        assert_eq!(implied.definition(), "FOREIGN KEY (a, b) REFERENCES t");
    }

    #[test]
    fn constraint_names_follow_postgresql_and_stay_unique() {
        let c = |name: &str, definition: &str| Constraint {
            name: name.to_string(),
            kind: "foreign key".to_string(),
            definition: definition.to_string(),
        };
        let mut constraints = vec![
            c(
                &constraint_name("orders", &["user_id".to_string()], "fkey"),
                "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
            ),
            c("orders_pkey", "PRIMARY KEY (id)"),
            c(
                "orders_user_id_fkey",
                "FOREIGN KEY (user_id) REFERENCES accounts(id)",
            ),
        ];
        dedupe_names(&mut constraints);
        let names: Vec<(&str, &str)> = constraints
            .iter()
            .map(|c| (c.name.as_str(), c.definition.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("orders_pkey", "PRIMARY KEY (id)"),
                (
                    "orders_user_id_fkey",
                    "FOREIGN KEY (user_id) REFERENCES accounts(id)"
                ),
                (
                    "orders_user_id_fkey1",
                    "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
                ),
            ]
        );
    }
}
