//! Reads a PostgreSQL database's schema into the engine-neutral [`Snapshot`].
//!
//! **How it reads.** One `REPEATABLE READ READ ONLY` transaction with `search_path` set to
//! the empty string, so that every name the server prints (`format_type`, `pg_get_indexdef`,
//! `pg_get_expr`…) is schema-qualified unless it lives in `pg_catalog` (which is always
//! searched implicitly): `app.mood`, `public.citext`, `nextval('app.items_id_seq'::regclass)`.
//! There is one catalog query per kind of object ([`Kind`]), never one per table, so the cost
//! in round trips does not grow with the schema: [`ROUND_TRIPS`] in all, because `BEGIN` and
//! the `SET LOCAL`s ride along with the first query and `COMMIT` with the last. Every cell is
//! cast to text in SQL (booleans print as `true`/`false`), which keeps decoding trivial under
//! the simple query protocol; lists inside a cell (enum labels, policy roles) come as JSON
//! arrays.
//!
//! **Consistency.** The `SELECT`s see one MVCC snapshot. The deparsing functions
//! (`pg_get_indexdef`, `pg_get_constraintdef`, `format_type`…) read the catalog caches, which
//! see the latest committed state instead; pg_dump has the same caveat. If DDL drops an object
//! between the two, its definition comes back NULL and the snapshot fails with an error that
//! says to take it again, rather than recording a half-read object. `pg_get_viewdef` and
//! `pg_get_expr` take `ACCESS SHARE` locks on the tables they mention, so a migration holding
//! `ACCESS EXCLUSIVE` would stall them: `lock_timeout` (passed in) bounds each wait, and
//! `statement_timeout` bounds each query (see [`statement_timeout_ms`]).
//!
//! **What is in it**, and the choices the model leaves open:
//! - Schemas other than `pg_catalog`, `information_schema`, `pg_toast` and the temporary
//!   `pg_temp_N`/`pg_toast_temp_N`. The history table's schema is listed like any other
//!   (startgate creates it if missing, and every database that ran `init` has it).
//! - Every extension, `plpgsql` included (it is one, and a database without it differs).
//! - Tables: ordinary and partitioned (`relkind` `r` and `p`). **Partitions are tables in
//!   their own right** and are listed as such, each with its own columns, constraints,
//!   indexes (the partitions of the parent's indexes), triggers and policies: a missing
//!   partition makes inserts fail, so it is drift worth reporting. The model has no field
//!   for the parent or the bounds, so a partition is not marked as one. A schema whose
//!   partitions are created and dropped at run time (pg_partman, cron) will see them come
//!   and go as extra and missing tables. Foreign tables are not read.
//! - Columns in `attnum` order, dropped and system columns left out. A generated column
//!   (`attgenerated` `s`, or `v` from PostgreSQL 18) has its expression in `generated` and
//!   no `default`.
//! - Constraints `p`, `u`, `f`, `c`, `x`; the NOT NULL constraints that PostgreSQL 18 keeps in
//!   `pg_constraint` are left out (nullability is on the column). Indexes include those that
//!   back constraints. Internal triggers (foreign-key machinery) are left out.
//! - **Sequences**: every sequence except those that belong to an identity column (they are
//!   implied by the column, and their names are PostgreSQL's choice). **A `serial` column's
//!   sequence is listed**: in PostgreSQL it is a separate object, which the column's default
//!   names (`nextval('app.t_id_seq'::regclass)`) and which can be altered or dropped on its
//!   own. Values (`last_value`) are data, not schema, and are not read.
//! - Views and materialized views with `pg_get_viewdef(oid, true)` (indexes on materialized
//!   views have no place in the model and are not read).
//! - **Functions and procedures** (`prokind` `f` and `p`). **Aggregates and window functions
//!   are left out**: the model's `kind` is `function` or `procedure`, an aggregate's
//!   definition lives in `pg_aggregate` (its `prosrc` is a stub), and user-defined window
//!   functions can only be written in C. The functions an aggregate is built from are
//!   ordinary functions and are listed. The body hash is SHA-256 of `prosrc`, or, for a
//!   SQL-standard body (`BEGIN ATOMIC`/`RETURN`, PostgreSQL 14+, whose `prosrc` is empty), of
//!   the body as `pg_get_function_sqlbody` prints it.
//!
//! **What is left out**: the system schemas, temporary objects, every object that belongs to
//! an extension (`pg_depend.deptype = 'e'`, e.g. `citext`'s type and functions, or a table an
//! extension creates), and startgate's own history table with everything that hangs off it
//! (its indexes, constraints, triggers, policies and sequences).
//!
//! Every list is sorted here, in Rust, by byte order of the names (never by the server's
//! collation), so the same schema gives the same JSON on every server.
//!
//! Needs PostgreSQL 11 or later (`prokind`, `sha256()`).

use std::collections::BTreeMap;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::{describe, quote_literal, quoted_table};
use crate::backend::BackendError;
use crate::config::HistoryTable;
use crate::schema::{
    Column, Constraint, Enum, Extension, FORMAT_VERSION, Function, Index, Policy, Sequence,
    Snapshot, Table, Trigger, View,
};

/// What a failed snapshot says it was doing.
const WHAT: &str = "reading the schema catalog";

/// Round trips to the server for one snapshot, whatever the size of the schema: one per
/// catalog query ([`KINDS`]); `BEGIN`/`SET LOCAL` share the first and `COMMIT` the last. A
/// failed snapshot costs one more (`ROLLBACK`).
pub const ROUND_TRIPS: usize = KINDS.len();

/// Work time allowed to each catalog query beyond its lock waits: a catalog query on a
/// schema of thousands of tables takes milliseconds, so this is only reached by a stuck or
/// overloaded server, and then the snapshot fails instead of hanging.
const QUERY_WORK_MS: u128 = 30_000;

/// The oldest server the queries are written for: `pg_proc.prokind` and `sha256()` are 11.
const MIN_MAJOR: u32 = 11;

/// The kinds of object, one catalog query each, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Schemas,
    Extensions,
    Enums,
    Sequences,
    Tables,
    Columns,
    Constraints,
    Indexes,
    Triggers,
    Policies,
    Views,
    Functions,
}

const KINDS: [Kind; 12] = [
    Kind::Schemas,
    Kind::Extensions,
    Kind::Enums,
    Kind::Sequences,
    Kind::Tables,
    Kind::Columns,
    Kind::Constraints,
    Kind::Indexes,
    Kind::Triggers,
    Kind::Policies,
    Kind::Views,
    Kind::Functions,
];

impl Kind {
    /// The object's name in messages.
    fn noun(self) -> &'static str {
        match self {
            Kind::Schemas => "schema",
            Kind::Extensions => "extension",
            Kind::Enums => "enum",
            Kind::Sequences => "sequence",
            Kind::Tables => "table",
            Kind::Columns => "column",
            Kind::Constraints => "constraint",
            Kind::Indexes => "index",
            Kind::Triggers => "trigger",
            Kind::Policies => "policy",
            Kind::Views => "view",
            Kind::Functions => "function",
        }
    }
}

/// One row of a catalog query: every cell as text, NULL as `None`.
type Cells = Vec<Option<String>>;

/// Reads the schema: see the module documentation for what is in it and how it is read.
///
/// `exclude` is startgate's history table (left out with everything that hangs off it),
/// `server_version` the server's `server_version` (recorded, and its major version chooses
/// the catalog columns to read), `lock_timeout_ms` the bound on each lock wait (`0`: the
/// session's own setting).
pub async fn snapshot(
    conn: &mut PgConnection,
    exclude: &HistoryTable,
    server_version: &str,
    lock_timeout_ms: u128,
) -> Result<Snapshot, BackendError> {
    read(conn, exclude, server_version, lock_timeout_ms)
        .await
        .map(|(snapshot, _)| snapshot)
}

/// [`snapshot`], and the number of round trips it took.
async fn read(
    conn: &mut PgConnection,
    exclude: &HistoryTable,
    server_version: &str,
    lock_timeout_ms: u128,
) -> Result<(Snapshot, usize), BackendError> {
    let error = |message: String| BackendError::Query {
        what: WHAT.to_string(),
        message,
    };
    let major = major_version(server_version).ok_or_else(|| {
        error(format!(
            "cannot tell the major version from server_version {server_version:?}"
        ))
    })?;
    if major < MIN_MAJOR {
        return Err(error(format!(
            "schema snapshots need PostgreSQL {MIN_MAJOR} or later; this server is {server_version}"
        )));
    }
    let history = format!(
        "(SELECT pg_catalog.to_regclass({}))",
        quote_literal(&quoted_table(exclude))
    );
    let last = KINDS.len() - 1;
    let mut results: Vec<Vec<Cells>> = Vec::with_capacity(KINDS.len());
    let mut round_trips = 0;
    for (i, kind) in KINDS.into_iter().enumerate() {
        let mut sql = String::new();
        if i == 0 {
            sql.push_str(&begin(lock_timeout_ms));
        }
        sql.push_str(&query(kind, major, &history));
        if i == last {
            sql.push_str("; COMMIT");
        }
        round_trips += 1;
        let rows = match sqlx::raw_sql(&sql).fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) => {
                rollback_quietly(conn).await;
                return Err(error(describe(&e)));
            }
        };
        let mut cells = Vec::with_capacity(rows.len());
        for row in &rows {
            match (0..row.len())
                .map(|c| row.try_get::<Option<String>, _>(c))
                .collect::<Result<Cells, _>>()
            {
                Ok(row) => cells.push(row),
                Err(e) => {
                    if i != last {
                        rollback_quietly(conn).await;
                    }
                    return Err(error(format!(
                        "cannot read a row of the {} query: {}",
                        kind.noun(),
                        describe(&e)
                    )));
                }
            }
        }
        results.push(cells);
    }
    debug_assert_eq!(round_trips, ROUND_TRIPS);
    let snapshot = assemble(server_version, &results).map_err(error)?;
    Ok((snapshot, round_trips))
}

async fn rollback_quietly(conn: &mut PgConnection) {
    if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
        tracing::debug!(error = %describe(&e), "rollback failed (the session may be gone)");
    }
}

/// The major version in `server_version`: `15` in `15.20`, `17` in `17beta1`, `9` in `9.6.24`.
fn major_version(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `statement_timeout` for each catalog query: the lock wait it may need plus
/// [`QUERY_WORK_MS`], so that a wait on a lock ends with the lock-timeout error (which says
/// what happened) rather than a statement timeout. At most `i32::MAX` ms, the server's limit.
fn statement_timeout_ms(lock_timeout_ms: u128) -> u128 {
    lock_timeout_ms
        .saturating_add(QUERY_WORK_MS)
        .min(i32::MAX as u128)
}

/// Opens the transaction: one consistent view of the catalog, no writes, every printed name
/// qualified, and bounded waits.
fn begin(lock_timeout_ms: u128) -> String {
    let mut sql = String::from(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL search_path = ''; ",
    );
    let lock_timeout_ms = lock_timeout_ms.min(i32::MAX as u128);
    if lock_timeout_ms > 0 {
        sql.push_str(&format!("SET LOCAL lock_timeout = '{lock_timeout_ms}ms'; "));
    }
    sql.push_str(&format!(
        "SET LOCAL statement_timeout = '{}ms'; ",
        statement_timeout_ms(lock_timeout_ms)
    ));
    sql
}

/// `n` (a `pg_namespace`) is a user schema: not PostgreSQL's own, not a session's temporary one.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
     AND n.nspname !~ '^pg_(toast_)?temp_'";

/// The object `oid` of catalog `catalog` does not belong to an extension.
fn not_extension_member(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_catalog.{catalog}'::regclass \
         AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

/// The relation `c` in namespace `n` is reported: a user schema, not temporary, not an
/// extension's, not the history table (`history`: its oid, NULL when it does not exist).
fn relation_in_scope(history: &str) -> String {
    format!(
        "{USER_SCHEMA} AND c.relpersistence <> 't' AND {} AND c.oid IS DISTINCT FROM {history}",
        not_extension_member("pg_class", "c.oid")
    )
}

/// The rows of `X` that hang off a reported table `c` (joined on `X.{relid}`).
fn of_tables(from: &str, relid: &str, history: &str) -> String {
    format!(
        "FROM {from} JOIN pg_class c ON c.oid = {relid} \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND {}",
        relation_in_scope(history)
    )
}

/// The catalog query for one kind of object. The first two columns of every query that
/// returns objects in a schema are the schema and the name (of the object, or of its table).
fn query(kind: Kind, major: u32, history: &str) -> String {
    match kind {
        Kind::Schemas => format!(
            "SELECT n.nspname::text FROM pg_namespace n WHERE {USER_SCHEMA} AND {}",
            not_extension_member("pg_namespace", "n.oid")
        ),
        Kind::Extensions => "SELECT e.extname::text, n.nspname::text, e.extversion::text \
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            .to_string(),
        Kind::Enums => format!(
            "SELECT n.nspname::text, t.typname::text, \
             (SELECT json_agg(l.enumlabel::text ORDER BY l.enumsortorder) \
              FROM pg_enum l WHERE l.enumtypid = t.oid)::text \
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.typtype = 'e' AND {USER_SCHEMA} AND {}",
            not_extension_member("pg_type", "t.oid")
        ),
        // An identity column's sequence depends on its table with deptype 'i'; a serial
        // column's with 'a'. The history table's sequences (none today) go with it.
        Kind::Sequences => format!(
            "SELECT n.nspname::text, c.relname::text, format_type(s.seqtypid, NULL), \
             s.seqincrement::text, s.seqmin::text, s.seqmax::text, s.seqstart::text, \
             s.seqcycle::text \
             FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE {} AND NOT EXISTS (SELECT 1 FROM pg_depend d \
               WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass \
               AND (d.deptype = 'i' OR d.refobjid = {history}))",
            relation_in_scope(history)
        ),
        Kind::Tables => format!(
            "SELECT n.nspname::text, c.relname::text, c.relrowsecurity::text, \
             c.relforcerowsecurity::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND {}",
            relation_in_scope(history)
        ),
        Kind::Columns => {
            // `attgenerated` is 12+; before, no column is generated.
            let generated = if major >= 12 {
                "a.attgenerated::text"
            } else {
                "''"
            };
            format!(
                "SELECT n.nspname::text, c.relname::text, a.attnum::text, a.attname::text, \
                 format_type(a.atttypid, a.atttypmod), a.attnotnull::text, {generated}, \
                 pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text \
                 {} AND a.attnum > 0 AND NOT a.attisdropped",
                of_tables(
                    "pg_attribute a LEFT JOIN pg_attrdef ad \
                     ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum",
                    "a.attrelid",
                    history
                )
            )
        }
        Kind::Constraints => format!(
            "SELECT n.nspname::text, c.relname::text, k.conname::text, k.contype::text, \
             pg_get_constraintdef(k.oid) {} AND k.contype IN ('p', 'u', 'f', 'c', 'x')",
            of_tables("pg_constraint k", "k.conrelid", history)
        ),
        Kind::Indexes => format!(
            "SELECT n.nspname::text, c.relname::text, i.relname::text, \
             pg_get_indexdef(x.indexrelid), x.indisunique::text, x.indisvalid::text {}",
            of_tables(
                "pg_index x JOIN pg_class i ON i.oid = x.indexrelid",
                "x.indrelid",
                history
            )
        ),
        Kind::Triggers => format!(
            "SELECT n.nspname::text, c.relname::text, g.tgname::text, pg_get_triggerdef(g.oid) \
             {} AND NOT g.tgisinternal",
            of_tables("pg_trigger g", "g.tgrelid", history)
        ),
        Kind::Policies => format!(
            "SELECT n.nspname::text, c.relname::text, p.polname::text, p.polcmd::text, \
             p.polpermissive::text, \
             (SELECT json_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END) \
              FROM unnest(p.polroles) AS r)::text, \
             pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) {}",
            of_tables("pg_policy p", "p.polrelid", history)
        ),
        Kind::Views => format!(
            "SELECT n.nspname::text, c.relname::text, (c.relkind = 'm')::text, \
             pg_get_viewdef(c.oid, true) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('v', 'm') AND {}",
            relation_in_scope(history)
        ),
        Kind::Functions => {
            // A SQL-standard body (14+) is in `prosqlbody`, and `prosrc` is empty.
            let body = if major >= 14 {
                "CASE WHEN p.prosqlbody IS NULL THEN p.prosrc \
                 ELSE pg_get_function_sqlbody(p.oid) END"
            } else {
                "p.prosrc"
            };
            format!(
                "SELECT n.nspname::text, p.proname::text, p.prokind::text, \
                 pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid), \
                 l.lanname::text, encode(sha256(convert_to({body}, 'UTF8')), 'hex') \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 JOIN pg_language l ON l.oid = p.prolang \
                 WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMA} AND {}",
                not_extension_member("pg_proc", "p.oid")
            )
        }
    }
}

/// One row of a catalog query, with the accessors that turn a surprise into an error naming
/// the object.
struct Row<'a> {
    kind: Kind,
    cells: &'a [Option<String>],
}

impl Row<'_> {
    /// `schema.name` (or `schema.table.name` for what hangs off a table), for messages.
    fn object(&self) -> String {
        let names = match self.kind {
            Kind::Schemas | Kind::Extensions => 1,
            Kind::Enums | Kind::Sequences | Kind::Tables | Kind::Views | Kind::Functions => 2,
            _ => 3,
        };
        let column = if self.kind == Kind::Columns { 3 } else { 2 };
        (0..names)
            .map(|i| {
                let at = if i == 2 { column } else { i };
                self.cells.get(at).and_then(|c| c.as_deref()).unwrap_or("?")
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn problem(&self, what: &str) -> String {
        format!(
            "{} {}: {what} (was it changed while the schema was read? take the snapshot again)",
            self.kind.noun(),
            self.object()
        )
    }

    /// A cell that must not be NULL; `what` names it in the error.
    fn text(&self, i: usize, what: &str) -> Result<String, String> {
        match self.cells.get(i) {
            Some(Some(text)) => Ok(text.clone()),
            Some(None) => Err(self.problem(&format!("no {what}"))),
            None => Err(format!(
                "the {} query returned {} columns, expected more",
                self.kind.noun(),
                self.cells.len()
            )),
        }
    }

    /// A cell that may be NULL.
    fn optional(&self, i: usize) -> Option<String> {
        self.cells.get(i).cloned().flatten()
    }

    fn flag(&self, i: usize, what: &str) -> Result<bool, String> {
        match self.text(i, what)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.problem(&format!("{what} is {other:?}, not a boolean"))),
        }
    }

    /// A JSON array of strings; NULL is the empty list.
    fn list(&self, i: usize, what: &str) -> Result<Vec<String>, String> {
        match self.optional(i) {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| self.problem(&format!("{what} are not a JSON list of text: {e}"))),
        }
    }

    /// The table a row hangs off: (schema, name).
    fn table(&self) -> Result<(String, String), String> {
        Ok((self.text(0, "schema")?, self.text(1, "table")?))
    }
}

/// The rows of one query.
fn rows(results: &[Vec<Cells>], kind: Kind) -> impl Iterator<Item = Row<'_>> {
    let at = KINDS.iter().position(|k| *k == kind).unwrap_or(usize::MAX);
    results
        .get(at)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(move |cells| Row { kind, cells })
}

/// `polcmd` in the words of `CREATE POLICY … FOR`.
fn policy_command(polcmd: &str) -> Option<&'static str> {
    Some(match polcmd {
        "*" => "ALL",
        "r" => "SELECT",
        "a" => "INSERT",
        "w" => "UPDATE",
        "d" => "DELETE",
        _ => return None,
    })
}

/// `attidentity` in the words of `GENERATED … AS IDENTITY`; `None` for an ordinary column.
fn identity(attidentity: &str) -> Result<Option<&'static str>, ()> {
    match attidentity {
        "" => Ok(None),
        "a" => Ok(Some("always")),
        "d" => Ok(Some("by default")),
        _ => Err(()),
    }
}

fn constraint_kind(contype: &str) -> Option<&'static str> {
    Some(match contype {
        "p" => "primary key",
        "u" => "unique",
        "f" => "foreign key",
        "c" => "check",
        "x" => "exclusion",
        _ => return None,
    })
}

/// Builds the snapshot from the rows of every query (in [`KINDS`] order), grouping what hangs
/// off a table under it and sorting every list. Pure: unit-tested without a server.
fn assemble(server_version: &str, results: &[Vec<Cells>]) -> Result<Snapshot, String> {
    let mut schemas = rows(results, Kind::Schemas)
        .map(|r| r.text(0, "name"))
        .collect::<Result<Vec<_>, _>>()?;
    schemas.sort();

    let mut extensions = rows(results, Kind::Extensions)
        .map(|r| {
            Ok(Extension {
                name: r.text(0, "name")?,
                schema: r.text(1, "schema")?,
                version: r.text(2, "version")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    extensions.sort_by(|a, b| (&a.name, &a.schema).cmp(&(&b.name, &b.schema)));

    let mut enums = rows(results, Kind::Enums)
        .map(|r| {
            Ok(Enum {
                schema: r.text(0, "schema")?,
                name: r.text(1, "name")?,
                // Already in `enumsortorder` order (a number, not a collation).
                labels: r.list(2, "labels")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    enums.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));

    let mut sequences = rows(results, Kind::Sequences)
        .map(|r| {
            Ok(Sequence {
                schema: r.text(0, "schema")?,
                name: r.text(1, "name")?,
                data_type: r.text(2, "type")?,
                increment: r.text(3, "increment")?,
                min_value: r.text(4, "minimum")?,
                max_value: r.text(5, "maximum")?,
                start: r.text(6, "start")?,
                cycle: r.flag(7, "cycle")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    sequences.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));

    // Keyed by (schema, name): the map's order is the sorted order.
    let mut tables: BTreeMap<(String, String), Table> = BTreeMap::new();
    for r in rows(results, Kind::Tables) {
        let (schema, name) = r.table()?;
        tables.insert(
            (schema.clone(), name.clone()),
            Table {
                schema,
                name,
                columns: Vec::new(),
                constraints: Vec::new(),
                indexes: Vec::new(),
                triggers: Vec::new(),
                rls_enabled: r.flag(2, "relrowsecurity")?,
                rls_forced: r.flag(3, "relforcerowsecurity")?,
                policies: Vec::new(),
            },
        );
    }
    // Every query filters tables alike and sees the same MVCC snapshot, so a row for a table
    // that is not in the map cannot happen; if it did, the row's table is out of scope and it
    // is skipped.
    let mut positions: BTreeMap<(String, String), Vec<(i32, Column)>> = BTreeMap::new();
    for r in rows(results, Kind::Columns) {
        let key = r.table()?;
        let attnum: i32 = r
            .text(2, "attnum")?
            .parse()
            .map_err(|_| r.problem("attnum is not a number"))?;
        let expression = r.optional(7);
        let generated = !r.text(6, "attgenerated")?.is_empty();
        let attidentity = r.text(8, "attidentity")?;
        let column = Column {
            name: r.text(3, "name")?,
            data_type: r.text(4, "type")?,
            nullable: !r.flag(5, "attnotnull")?,
            default: if generated { None } else { expression.clone() },
            identity: identity(&attidentity)
                .map_err(|()| r.problem(&format!("unknown attidentity {attidentity:?}")))?
                .map(str::to_string),
            generated: if generated {
                Some(expression.ok_or_else(|| r.problem("no generation expression"))?)
            } else {
                None
            },
        };
        positions.entry(key).or_default().push((attnum, column));
    }
    for (key, mut columns) in positions {
        if let Some(table) = tables.get_mut(&key) {
            columns.sort_by_key(|(attnum, _)| *attnum);
            table.columns = columns.into_iter().map(|(_, c)| c).collect();
        }
    }
    for r in rows(results, Kind::Constraints) {
        let contype = r.text(3, "contype")?;
        let constraint = Constraint {
            name: r.text(2, "name")?,
            kind: constraint_kind(&contype)
                .ok_or_else(|| r.problem(&format!("unknown contype {contype:?}")))?
                .to_string(),
            definition: r.text(4, "definition")?,
        };
        if let Some(table) = tables.get_mut(&r.table()?) {
            table.constraints.push(constraint);
        }
    }
    for r in rows(results, Kind::Indexes) {
        let index = Index {
            name: r.text(2, "name")?,
            definition: r.text(3, "definition")?,
            unique: r.flag(4, "indisunique")?,
            valid: r.flag(5, "indisvalid")?,
        };
        if let Some(table) = tables.get_mut(&r.table()?) {
            table.indexes.push(index);
        }
    }
    for r in rows(results, Kind::Triggers) {
        let trigger = Trigger {
            name: r.text(2, "name")?,
            definition: r.text(3, "definition")?,
        };
        if let Some(table) = tables.get_mut(&r.table()?) {
            table.triggers.push(trigger);
        }
    }
    for r in rows(results, Kind::Policies) {
        let polcmd = r.text(3, "polcmd")?;
        let mut roles = r.list(5, "roles")?;
        roles.sort();
        let policy = Policy {
            name: r.text(2, "name")?,
            command: policy_command(&polcmd)
                .ok_or_else(|| r.problem(&format!("unknown polcmd {polcmd:?}")))?
                .to_string(),
            permissive: r.flag(4, "polpermissive")?,
            roles,
            using: r.optional(6),
            with_check: r.optional(7),
        };
        if let Some(table) = tables.get_mut(&r.table()?) {
            table.policies.push(policy);
        }
    }
    let tables = tables
        .into_values()
        .map(|mut table| {
            // Names are unique per table (indexes per schema); the definition only breaks a
            // tie that PostgreSQL does not allow, so the order is total whatever happens.
            table
                .constraints
                .sort_by(|a, b| (&a.name, &a.definition).cmp(&(&b.name, &b.definition)));
            table
                .indexes
                .sort_by(|a, b| (&a.name, &a.definition).cmp(&(&b.name, &b.definition)));
            table
                .triggers
                .sort_by(|a, b| (&a.name, &a.definition).cmp(&(&b.name, &b.definition)));
            table.policies.sort_by(|a, b| a.name.cmp(&b.name));
            table
        })
        .collect();

    let mut views = rows(results, Kind::Views)
        .map(|r| {
            Ok(View {
                schema: r.text(0, "schema")?,
                name: r.text(1, "name")?,
                materialized: r.flag(2, "materialized")?,
                definition: r.text(3, "definition")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    views.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));

    let mut functions = rows(results, Kind::Functions)
        .map(|r| {
            let procedure = match r.text(2, "prokind")?.as_str() {
                "f" => false,
                "p" => true,
                other => return Err(r.problem(&format!("unknown prokind {other:?}"))),
            };
            Ok(Function {
                schema: r.text(0, "schema")?,
                name: r.text(1, "name")?,
                kind: if procedure { "procedure" } else { "function" }.to_string(),
                arguments: r.text(3, "arguments")?,
                returns: if procedure {
                    None
                } else {
                    Some(r.text(4, "result type")?)
                },
                language: r.text(5, "language")?,
                body_sha256: r.text(6, "body hash")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    // Overloads share a name: the arguments tell them apart.
    functions.sort_by(|a, b| {
        (&a.schema, &a.name, &a.arguments, &a.kind).cmp(&(
            &b.schema,
            &b.name,
            &b.arguments,
            &b.kind,
        ))
    });

    Ok(Snapshot {
        format: FORMAT_VERSION,
        engine: "postgres".to_string(),
        server_version: server_version.to_string(),
        schemas,
        extensions,
        enums,
        sequences,
        tables,
        views,
        functions,
    })
}

/// For the integration tests until `Backend` has a snapshot method: connects to `url`, takes
/// a snapshot with a lock timeout of [`TEST_LOCK_TIMEOUT_MS`], and closes the connection.
#[doc(hidden)]
pub async fn snapshot_for_tests(url: &str, exclude: &HistoryTable) -> Result<Snapshot, String> {
    let (mut conn, version) = connect_for_tests(url).await?;
    let result = snapshot(&mut conn, exclude, &version, TEST_LOCK_TIMEOUT_MS).await;
    close_for_tests(conn).await;
    result.map_err(|e| e.to_string())
}

/// As [`snapshot_for_tests`], but returns the number of round trips the snapshot took.
#[doc(hidden)]
pub async fn round_trips_for_tests(url: &str, exclude: &HistoryTable) -> Result<usize, String> {
    let (mut conn, version) = connect_for_tests(url).await?;
    let result = read(&mut conn, exclude, &version, TEST_LOCK_TIMEOUT_MS).await;
    close_for_tests(conn).await;
    result.map(|(_, n)| n).map_err(|e| e.to_string())
}

/// The lock timeout [`snapshot_for_tests`] uses: short, so that a test of a blocked snapshot
/// ends quickly.
#[doc(hidden)]
pub const TEST_LOCK_TIMEOUT_MS: u128 = 1_000;

/// A connection to `url` and the server's version as [`super::Postgres`] records it.
async fn connect_for_tests(url: &str) -> Result<(PgConnection, String), String> {
    use sqlx::Connection;
    let mut conn = PgConnection::connect(url).await.map_err(|e| describe(&e))?;
    let row = sqlx::raw_sql("SELECT current_setting('server_version')")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| describe(&e))?;
    let version: String = row.try_get(0).map_err(|e| describe(&e))?;
    let version = version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((conn, version))
}

async fn close_for_tests(conn: PgConnection) {
    use sqlx::Connection;
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %describe(&e), "closing the test connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(row: &[Option<&str>]) -> Cells {
        row.iter().map(|c| c.map(str::to_string)).collect()
    }

    /// Results with the given rows for some kinds, none for the others.
    fn results(given: &[(Kind, Vec<Vec<Option<&str>>>)]) -> Vec<Vec<Cells>> {
        KINDS
            .iter()
            .map(|kind| {
                given
                    .iter()
                    .filter(|(k, _)| k == kind)
                    .flat_map(|(_, rows)| rows.iter().map(|r| cells(r)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn major_versions() {
        for (text, major) in [
            ("15.20", Some(15)),
            ("17beta1", Some(17)),
            ("9.6.24", Some(9)),
            (" 16.4", Some(16)),
            ("", None),
            ("devel", None),
        ] {
            assert_eq!(major_version(text), major, "{text:?}");
        }
    }

    #[test]
    fn timeouts() {
        for (lock, statement) in [(0, 30_000), (5_000, 35_000), (u128::MAX, i32::MAX as u128)] {
            assert_eq!(statement_timeout_ms(lock), statement, "{lock}");
        }
        assert!(!begin(0).contains("lock_timeout"));
        assert!(begin(250).contains("SET LOCAL lock_timeout = '250ms'"));
    }

    #[test]
    fn one_query_per_kind() {
        assert_eq!(ROUND_TRIPS, 12);
        for kind in KINDS {
            let sql = query(kind, 15, "(SELECT NULL::oid)");
            assert!(sql.starts_with("SELECT "), "{kind:?}: {sql}");
            assert!(!sql.contains(';'), "{kind:?} is one statement: {sql}");
        }
    }

    #[test]
    fn mappings() {
        for (code, word) in [
            ("*", Some("ALL")),
            ("r", Some("SELECT")),
            ("a", Some("INSERT")),
            ("w", Some("UPDATE")),
            ("d", Some("DELETE")),
            ("x", None),
        ] {
            assert_eq!(policy_command(code), word, "{code}");
        }
        for (code, word) in [
            ("", Ok(None)),
            ("a", Ok(Some("always"))),
            ("d", Ok(Some("by default"))),
            ("z", Err(())),
        ] {
            assert_eq!(identity(code), word, "{code}");
        }
        assert_eq!(constraint_kind("x"), Some("exclusion"));
        assert_eq!(constraint_kind("n"), None);
    }

    #[test]
    fn groups_under_tables_and_sorts() {
        let t = |s| Some(s);
        let results = results(&[
            (Kind::Schemas, vec![vec![t("b")], vec![t("a")]]),
            (
                Kind::Tables,
                vec![
                    vec![t("b"), t("z"), t("false"), t("false")],
                    vec![t("a"), t("y"), t("true"), t("true")],
                ],
            ),
            (
                Kind::Columns,
                vec![
                    vec![
                        t("a"),
                        t("y"),
                        t("10"),
                        t("late"),
                        t("text"),
                        t("false"),
                        t(""),
                        None,
                        t(""),
                    ],
                    vec![
                        t("a"),
                        t("y"),
                        t("2"),
                        t("id"),
                        t("bigint"),
                        t("true"),
                        t(""),
                        None,
                        t("a"),
                    ],
                    vec![
                        t("a"),
                        t("y"),
                        t("3"),
                        t("total"),
                        t("numeric"),
                        t("false"),
                        t("s"),
                        t("(p * q)"),
                        t(""),
                    ],
                    // A table out of scope: skipped.
                    vec![
                        t("c"),
                        t("x"),
                        t("1"),
                        t("id"),
                        t("int"),
                        t("true"),
                        t(""),
                        None,
                        t(""),
                    ],
                ],
            ),
            (
                Kind::Policies,
                vec![
                    vec![
                        t("a"),
                        t("y"),
                        t("p2"),
                        t("r"),
                        t("false"),
                        t(r#"["web","admin"]"#),
                        t("(x > 0)"),
                        None,
                    ],
                    vec![
                        t("a"),
                        t("y"),
                        t("p1"),
                        t("*"),
                        t("true"),
                        t(r#"["public"]"#),
                        None,
                        None,
                    ],
                ],
            ),
            (
                Kind::Functions,
                vec![
                    vec![
                        t("a"),
                        t("f"),
                        t("f"),
                        t("x text"),
                        t("integer"),
                        t("sql"),
                        t("00"),
                    ],
                    vec![
                        t("a"),
                        t("f"),
                        t("f"),
                        t("x integer"),
                        t("integer"),
                        t("sql"),
                        t("11"),
                    ],
                    vec![t("a"), t("p"), t("p"), t(""), None, t("plpgsql"), t("22")],
                ],
            ),
        ]);
        let s = assemble("15.20", &results).expect("assembles");
        assert_eq!(s.schemas, ["a", "b"]);
        let names: Vec<_> = s
            .tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        assert_eq!(names, ["a.y", "b.z"]);
        let y = &s.tables[0];
        assert!(y.rls_enabled && y.rls_forced);
        let cols: Vec<_> = y.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["id", "total", "late"]);
        assert_eq!(y.columns[0].identity.as_deref(), Some("always"));
        assert!(!y.columns[0].nullable);
        assert_eq!(y.columns[1].generated.as_deref(), Some("(p * q)"));
        assert_eq!(y.columns[1].default, None);
        let policies: Vec<_> = y
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.command.as_str()))
            .collect();
        assert_eq!(policies, [("p1", "ALL"), ("p2", "SELECT")]);
        assert_eq!(y.policies[1].roles, ["admin", "web"]);
        assert!(!y.policies[1].permissive);
        let functions: Vec<_> = s
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.arguments.as_str(), f.returns.as_deref()))
            .collect();
        assert_eq!(
            functions,
            [
                ("f", "x integer", Some("integer")),
                ("f", "x text", Some("integer")),
                ("p", "", None)
            ]
        );
        assert_eq!(s.functions[2].kind, "procedure");
        assert_eq!(
            (s.format, s.engine.as_str(), s.server_version.as_str()),
            (FORMAT_VERSION, "postgres", "15.20")
        );
    }

    #[test]
    fn a_vanished_definition_is_an_error_naming_the_object() {
        let t = |s| Some(s);
        let results = results(&[
            (
                Kind::Tables,
                vec![vec![t("app"), t("items"), t("false"), t("false")]],
            ),
            (
                Kind::Indexes,
                vec![vec![
                    t("app"),
                    t("items"),
                    t("items_pkey"),
                    None,
                    t("true"),
                    t("true"),
                ]],
            ),
        ]);
        let error = assemble("15.20", &results).expect_err("fails");
        assert!(
            error.starts_with("index app.items.items_pkey: no definition"),
            "{error}"
        );
        assert!(error.contains("take the snapshot again"), "{error}");
    }
}
