//! The schema snapshot: what the live database contains, as a plain value that can be printed,
//! written as JSON (the format `STARTGATE_EXPECT_SCHEMA` reads, meant to be committed and
//! diffed), and compared ([`diff`]).
//!
//! Engine-neutral and pure: a backend fills it from its catalog (`crate::backend`), nothing here
//! talks to a database. Every list is sorted (tables, indexes, constraints, policies… by name;
//! columns in their table order; enum labels in their declared order), so two snapshots of the
//! same schema serialise to the same bytes. Names are schema-qualified; definitions come from
//! the engine with every name qualified, so they do not depend on a search path.

pub mod diff;

use serde::{Deserialize, Serialize};

/// The version of the JSON format. A file from a newer format is refused with a clear error
/// rather than half-understood.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a database's schema that the app relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`] of the program that wrote it.
    pub format: u32,
    /// `postgres` or `sqlite`.
    pub engine: String,
    /// The server version the snapshot was taken from, e.g. `15.20` (informative only: it is
    /// not compared).
    pub server_version: String,
    /// User schemas, sorted (system schemas are left out).
    pub schemas: Vec<String>,
    pub extensions: Vec<Extension>,
    pub enums: Vec<Enum>,
    pub sequences: Vec<Sequence>,
    pub tables: Vec<Table>,
    pub views: Vec<View>,
    pub functions: Vec<Function>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    pub name: String,
    pub schema: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enum {
    pub schema: String,
    pub name: String,
    /// Labels in their declared order (the order `ORDER BY` on the enum uses).
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub data_type: String,
    pub increment: String,
    pub min_value: String,
    pub max_value: String,
    pub start: String,
    pub cycle: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// In the table's column order.
    pub columns: Vec<Column>,
    /// Primary key, unique, foreign key, check and exclusion constraints, sorted by name.
    pub constraints: Vec<Constraint>,
    /// Sorted by name.
    pub indexes: Vec<Index>,
    /// Sorted by name.
    pub triggers: Vec<Trigger>,
    /// Row-level security enabled (`ALTER TABLE … ENABLE ROW LEVEL SECURITY`).
    pub rls_enabled: bool,
    /// Row-level security forced on the table owner too.
    pub rls_forced: bool,
    /// Sorted by name.
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// The type as the engine formats it, e.g. `text`, `character varying(255)`,
    /// `public.mood`.
    pub data_type: String,
    pub nullable: bool,
    /// The default expression, if any.
    pub default: Option<String>,
    /// `always` or `by default` for an identity column.
    pub identity: Option<String>,
    /// The expression of a generated column.
    pub generated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    pub name: String,
    /// `primary key`, `unique`, `foreign key`, `check` or `exclusion`.
    pub kind: String,
    /// The definition as the engine prints it, e.g. `CHECK ((price > 0))`.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub name: String,
    /// The full `CREATE INDEX` statement as the engine prints it.
    pub definition: String,
    pub unique: bool,
    /// False for an index left INVALID by a failed `CREATE INDEX CONCURRENTLY`.
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    /// The full `CREATE TRIGGER` statement as the engine prints it.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Permissive (the default) or restrictive.
    pub permissive: bool,
    /// Role names, sorted (`public` for PUBLIC).
    pub roles: Vec<String>,
    /// The USING expression.
    pub using: Option<String>,
    /// The WITH CHECK expression.
    pub with_check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    pub schema: String,
    pub name: String,
    pub materialized: bool,
    /// The query as the engine prints it.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub schema: String,
    pub name: String,
    /// `function` or `procedure`.
    pub kind: String,
    /// The identity arguments, e.g. `tenant uuid, since timestamp with time zone`.
    pub arguments: String,
    /// The result type (`None` for a procedure).
    pub returns: Option<String>,
    pub language: String,
    /// Lowercase hex SHA-256 of the body: a changed body is a change, without carrying the
    /// body itself in the snapshot.
    pub body_sha256: String,
}

/// A name as operators read it: unqualified in `public`, `schema.name` elsewhere.
pub fn display_name(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}
