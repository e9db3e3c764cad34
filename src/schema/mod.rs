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

/// Sorts every list of a snapshot the way the format promises (see the module doc), so that
/// the same schema always serialises to the same bytes: schemas, and objects by schema and
/// name (functions then by arguments); constraints, indexes, triggers and policies by name;
/// policy roles. Columns and enum labels keep their order, which is part of the schema.
pub fn normalise(snapshot: &mut Snapshot) {
    snapshot.schemas.sort();
    snapshot.extensions.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot
        .enums
        .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    snapshot
        .sequences
        .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    snapshot
        .tables
        .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    for table in &mut snapshot.tables {
        table.constraints.sort_by(|a, b| a.name.cmp(&b.name));
        table.indexes.sort_by(|a, b| a.name.cmp(&b.name));
        table.triggers.sort_by(|a, b| a.name.cmp(&b.name));
        table.policies.sort_by(|a, b| a.name.cmp(&b.name));
        for policy in &mut table.policies {
            policy.roles.sort();
        }
    }
    snapshot
        .views
        .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    snapshot.functions.sort_by(|a, b| {
        (&a.schema, &a.name, &a.arguments).cmp(&(&b.schema, &b.name, &b.arguments))
    });
}

/// The snapshot as the JSON document `startgate schema --json` prints and
/// `STARTGATE_EXPECT_SCHEMA` reads: pretty-printed, fields in declaration order, lists in the
/// order they hold (sorted by the producer, or by [`normalise`]), ending in a newline. The same
/// snapshot always gives the same bytes, so the file can be committed and diffed.
pub fn to_json(snapshot: &Snapshot) -> String {
    // Plain structs with string keys: serialising them cannot fail.
    let mut text = serde_json::to_string_pretty(snapshot)
        .expect("a snapshot serialises: plain structs with string keys");
    text.push('\n');
    text
}

/// Why a text is not a snapshot this startgate can read. The caller names the file
/// (`STARTGATE_EXPECT_SCHEMA`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Nothing but whitespace: typically a redirect whose command failed.
    #[error("empty: no snapshot in it (write one with `startgate schema --json`)")]
    Empty,
    /// Not JSON at all, or cut short.
    #[error("malformed JSON at line {line}, column {column}: {reason}")]
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("expected a JSON object (from `startgate schema --json`), found {found}")]
    NotAnObject { found: &'static str },
    #[error("no `format` field: not a snapshot from `startgate schema --json`")]
    MissingFormat,
    #[error(
        "`format` is {found}, not a format version (this startgate reads format {FORMAT_VERSION})"
    )]
    BadFormat { found: String },
    #[error(
        "written by a newer startgate (format {found}, this one reads up to {supported}): \
         upgrade startgate or regenerate the file with `startgate schema --json`"
    )]
    NewerFormat { found: u64, supported: u32 },
    /// JSON of the right format whose content does not fit it: an unknown or missing field, a
    /// value of the wrong type.
    #[error("not a valid snapshot at line {line}, column {column}: {reason}")]
    Invalid {
        line: usize,
        column: usize,
        reason: String,
    },
}

/// Reads a snapshot written by [`to_json`] (or by hand, in the same shape).
///
/// The `format` field is checked before anything else, so that a file from a newer startgate,
/// which may carry fields this one does not know, is refused for what it is rather than for an
/// unknown field.
pub fn from_json(text: &str) -> Result<Snapshot, SnapshotError> {
    if text.trim().is_empty() {
        return Err(SnapshotError::Empty);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(located)?;
    let object = value.as_object().ok_or(SnapshotError::NotAnObject {
        found: json_kind(&value),
    })?;
    let format = object.get("format").ok_or(SnapshotError::MissingFormat)?;
    match format.as_u64() {
        Some(version) if version > u64::from(FORMAT_VERSION) => {
            return Err(SnapshotError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        Some(version) if version >= 1 => {}
        _ => {
            return Err(SnapshotError::BadFormat {
                found: format.to_string(),
            });
        }
    }
    // From the text again, not from `value`: only then do errors keep their line and column.
    serde_json::from_str(text).map_err(located)
}

/// A serde_json error with its position as fields. Its own message ends in "at line L column
/// C"; that part is cut so that the position is said once.
fn located(error: serde_json::Error) -> SnapshotError {
    let (line, column) = (error.line(), error.column());
    let full = error.to_string();
    let reason = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full)
        .to_string();
    match error.classify() {
        serde_json::error::Category::Data => SnapshotError::Invalid {
            line,
            column,
            reason,
        },
        _ => SnapshotError::Malformed {
            line,
            column,
            reason,
        },
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The snapshot as `startgate schema` prints it for a reader: one block per table and view,
/// one line per other object, in the snapshot's order. Stable: the same snapshot gives the
/// same text.
pub fn to_text(snapshot: &Snapshot) -> String {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut header = vec![
        format!("{} {}", snapshot.engine, snapshot.server_version)
            .trim_end()
            .to_string(),
    ];
    if !snapshot.schemas.is_empty() {
        header.push(format!("schemas: {}", snapshot.schemas.join(", ")));
    }
    blocks.push(header);
    blocks.push(
        snapshot
            .extensions
            .iter()
            .map(|x| format!("extension {} {} (schema {})", x.name, x.version, x.schema))
            .collect(),
    );
    blocks.push(
        snapshot
            .enums
            .iter()
            .map(|x| {
                let labels: Vec<String> = x
                    .labels
                    .iter()
                    .map(|l| format!("'{}'", l.replace('\'', "''")))
                    .collect();
                format!(
                    "enum {}: {}",
                    display_name(&x.schema, &x.name),
                    labels.join(", ")
                )
            })
            .collect(),
    );
    blocks.push(
        snapshot
            .sequences
            .iter()
            .map(|x| {
                format!(
                    "sequence {} {}: start {}, increment {}, min {}, max {}, {}",
                    display_name(&x.schema, &x.name),
                    x.data_type,
                    x.start,
                    x.increment,
                    x.min_value,
                    x.max_value,
                    if x.cycle { "cycle" } else { "no cycle" }
                )
            })
            .collect(),
    );
    blocks.extend(snapshot.tables.iter().map(table_text));
    for view in &snapshot.views {
        let kind = if view.materialized {
            "materialized view"
        } else {
            "view"
        };
        let mut block = vec![format!("{kind} {}", display_name(&view.schema, &view.name))];
        block.extend(
            view.definition
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| format!("  {}", line.trim_end())),
        );
        blocks.push(block);
    }
    blocks.push(
        snapshot
            .functions
            .iter()
            .map(|f| {
                let returns = f
                    .returns
                    .as_ref()
                    .map(|r| format!(" returns {r},"))
                    .unwrap_or_default();
                format!(
                    "{} {}({}){returns} language {}, body sha256 {}",
                    f.kind,
                    display_name(&f.schema, &f.name),
                    f.arguments,
                    f.language,
                    f.body_sha256
                )
            })
            .collect(),
    );
    let blocks: Vec<String> = blocks
        .into_iter()
        .filter(|block| !block.is_empty())
        .map(|block| block.join("\n") + "\n")
        .collect();
    blocks.join("\n")
}

fn table_text(table: &Table) -> Vec<String> {
    let mut lines = vec![format!(
        "table {}",
        display_name(&table.schema, &table.name)
    )];
    section(
        &mut lines,
        "columns",
        table
            .columns
            .iter()
            .map(|c| {
                let mut line = format!("{} {}", c.name, c.data_type);
                if !c.nullable {
                    line.push_str(" not null");
                }
                if let Some(default) = &c.default {
                    line.push_str(&format!(" default {default}"));
                }
                if let Some(identity) = &c.identity {
                    line.push_str(&format!(" identity {identity}"));
                }
                if let Some(generated) = &c.generated {
                    line.push_str(&format!(" generated {generated}"));
                }
                line
            })
            .collect(),
    );
    section(
        &mut lines,
        "constraints",
        table
            .constraints
            .iter()
            .map(|c| format!("{}: {}", c.name, c.definition))
            .collect(),
    );
    section(
        &mut lines,
        "indexes",
        table
            .indexes
            .iter()
            .map(|i| {
                let invalid = if i.valid { "" } else { " (INVALID)" };
                format!("{}{invalid}: {}", i.name, i.definition)
            })
            .collect(),
    );
    section(
        &mut lines,
        "triggers",
        table
            .triggers
            .iter()
            .map(|t| format!("{}: {}", t.name, t.definition))
            .collect(),
    );
    // Shown whenever it matters: enabled, forced, or policies that only apply once enabled.
    if table.rls_enabled || table.rls_forced || !table.policies.is_empty() {
        let state = match (table.rls_enabled, table.rls_forced) {
            (true, true) => "enabled, forced",
            (true, false) => "enabled",
            (false, true) => "disabled (forced once enabled)",
            (false, false) => "disabled",
        };
        lines.push(format!("  row-level security {state}"));
    }
    section(
        &mut lines,
        "policies",
        table
            .policies
            .iter()
            .map(|p| {
                let mut line = format!(
                    "{}: {} for {} to {}",
                    p.name,
                    if p.permissive {
                        "permissive"
                    } else {
                        "restrictive"
                    },
                    p.command,
                    p.roles.join(", ")
                );
                if let Some(using) = &p.using {
                    line.push_str(&format!(" using {using}"));
                }
                if let Some(check) = &p.with_check {
                    line.push_str(&format!(" with check {check}"));
                }
                line
            })
            .collect(),
    );
    lines
}

/// A titled, indented section of a table's block; nothing when it is empty.
fn section(lines: &mut Vec<String>, title: &str, items: Vec<String>) {
    if !items.is_empty() {
        lines.push(format!("  {title}"));
        lines.extend(items.into_iter().map(|item| format!("    {item}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str, nullable: bool) -> Column {
        Column {
            name: name.to_string(),
            data_type: data_type.to_string(),
            nullable,
            default: None,
            identity: None,
            generated: None,
        }
    }

    fn constraint(name: &str, kind: &str, definition: &str) -> Constraint {
        Constraint {
            name: name.to_string(),
            kind: kind.to_string(),
            definition: definition.to_string(),
        }
    }

    fn index(name: &str, definition: &str) -> Index {
        Index {
            name: name.to_string(),
            definition: definition.to_string(),
            unique: definition.starts_with("CREATE UNIQUE"),
            valid: true,
        }
    }

    fn table(name: &str, columns: Vec<Column>, primary_key: &str) -> Table {
        Table {
            schema: "public".to_string(),
            name: name.to_string(),
            columns,
            constraints: vec![constraint(
                &format!("{name}_pkey"),
                "primary key",
                &format!("PRIMARY KEY ({primary_key})"),
            )],
            indexes: vec![index(
                &format!("{name}_pkey"),
                &format!(
                    "CREATE UNIQUE INDEX {name}_pkey ON public.{name} USING btree ({primary_key})"
                ),
            )],
            triggers: Vec::new(),
            rls_enabled: false,
            rls_forced: false,
            policies: Vec::new(),
        }
    }

    /// A small schema with one of everything, sorted as a producer sorts it; the drift tests
    /// edit copies of it.
    pub(super) fn base() -> Snapshot {
        let identity = |mut c: Column, how: &str| {
            c.identity = Some(how.to_string());
            c
        };
        let default = |mut c: Column, expression: &str| {
            c.default = Some(expression.to_string());
            c
        };
        let analytics_modules = table(
            "analytics_modules",
            vec![
                identity(column("id", "bigint", false), "always"),
                column("name", "text", false),
                column("description", "text", true),
            ],
            "id",
        );
        let feature_flags = table(
            "feature_flags",
            vec![
                column("name", "text", false),
                default(column("enabled", "boolean", false), "false"),
            ],
            "name",
        );
        let mut orders = table(
            "orders",
            vec![
                default(
                    column("id", "bigint", false),
                    "nextval('public.orders_id_seq'::regclass)",
                ),
                column("user_id", "bigint", false),
                default(
                    column("created_at", "timestamp with time zone", false),
                    "now()",
                ),
            ],
            "id",
        );
        orders.constraints.push(constraint(
            "orders_user_id_fkey",
            "foreign key",
            "FOREIGN KEY (user_id) REFERENCES public.users(id)",
        ));
        orders.indexes.insert(
            0,
            index(
                "orders_created_idx",
                "CREATE INDEX orders_created_idx ON public.orders USING btree (created_at)",
            ),
        );
        let mut products = table(
            "products",
            vec![
                identity(column("id", "bigint", false), "by default"),
                column("name", "text", false),
                column("price", "integer", false),
            ],
            "id",
        );
        products.constraints.insert(
            0,
            constraint("price_positive", "check", "CHECK ((price > 0))"),
        );
        let mut users = table(
            "users",
            vec![
                identity(column("id", "bigint", false), "always"),
                column("tenant_id", "uuid", false),
                column("email", "text", false),
                default(column("mood", "public.mood", true), "'ok'::public.mood"),
            ],
            "id",
        );
        users.indexes.insert(
            0,
            index(
                "users_email_idx",
                "CREATE UNIQUE INDEX users_email_idx ON public.users USING btree (email)",
            ),
        );
        users.triggers.push(Trigger {
            name: "users_touch".to_string(),
            definition: "CREATE TRIGGER users_touch BEFORE UPDATE ON public.users FOR EACH ROW \
                         EXECUTE FUNCTION public.touch()"
                .to_string(),
        });
        users.rls_enabled = true;
        users.rls_forced = true;
        users.policies.push(Policy {
            name: "tenant_isolation".to_string(),
            command: "ALL".to_string(),
            permissive: true,
            roles: vec!["app_user".to_string()],
            using: Some("(tenant_id = (current_setting('app.tenant'::text))::uuid)".to_string()),
            with_check: None,
        });
        Snapshot {
            format: FORMAT_VERSION,
            engine: "postgres".to_string(),
            server_version: "15.20".to_string(),
            schemas: vec!["public".to_string()],
            extensions: vec![Extension {
                name: "pgcrypto".to_string(),
                schema: "public".to_string(),
                version: "1.3".to_string(),
            }],
            enums: vec![Enum {
                schema: "public".to_string(),
                name: "mood".to_string(),
                labels: vec!["sad".to_string(), "ok".to_string(), "happy".to_string()],
            }],
            sequences: vec![Sequence {
                schema: "public".to_string(),
                name: "orders_id_seq".to_string(),
                data_type: "bigint".to_string(),
                increment: "1".to_string(),
                min_value: "1".to_string(),
                max_value: "9223372036854775807".to_string(),
                start: "1".to_string(),
                cycle: false,
            }],
            tables: vec![analytics_modules, feature_flags, orders, products, users],
            views: vec![View {
                schema: "public".to_string(),
                name: "active_users".to_string(),
                materialized: false,
                definition: " SELECT users.id,\n    users.email\n   FROM public.users\n  \
                             WHERE (users.mood <> 'sad'::public.mood);"
                    .to_string(),
            }],
            functions: vec![
                Function {
                    schema: "public".to_string(),
                    name: "tenant_orders".to_string(),
                    kind: "function".to_string(),
                    arguments: "tenant uuid".to_string(),
                    returns: Some("bigint".to_string()),
                    language: "sql".to_string(),
                    body_sha256: "a".repeat(64),
                },
                Function {
                    schema: "public".to_string(),
                    name: "touch".to_string(),
                    kind: "function".to_string(),
                    arguments: String::new(),
                    returns: Some("trigger".to_string()),
                    language: "plpgsql".to_string(),
                    body_sha256: "b".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn json_round_trips() {
        let snapshot = base();
        let text = to_json(&snapshot);
        assert_eq!(from_json(&text), Ok(snapshot.clone()));
        assert!(text.ends_with("}\n"), "{text}");
        // The same snapshot, and the same snapshot read back, give the same bytes.
        assert_eq!(to_json(&base()), text);
        assert_eq!(to_json(&from_json(&text).unwrap()), text);
    }

    #[test]
    fn json_keeps_field_order_and_sorted_lists() {
        let text = to_json(&base());
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        assert!(at("\"format\": 1") < at("\"engine\"") && at("\"engine\"") < at("\"tables\""));
        assert!(at("\"analytics_modules\"") < at("\"feature_flags\""));
        assert!(at("CREATE INDEX orders_created_idx") < at("CREATE UNIQUE INDEX orders_pkey"));
    }

    #[test]
    fn normalise_sorts_lists_but_keeps_column_and_label_order() {
        let mut shuffled = base();
        shuffled.tables.reverse();
        shuffled.functions.reverse();
        for table in &mut shuffled.tables {
            table.indexes.reverse();
            table.constraints.reverse();
        }
        shuffled.tables[0].policies[0].roles = vec!["b".to_string(), "a".to_string()];
        normalise(&mut shuffled);
        let mut want = base();
        want.tables[4].policies[0].roles = vec!["a".to_string(), "b".to_string()];
        assert_eq!(shuffled, want);
        assert_eq!(shuffled.tables[4].columns[0].name, "id");
        assert_eq!(shuffled.enums[0].labels, ["sad", "ok", "happy"]);
    }

    #[track_caller]
    fn check_error(text: &str, want: &str) {
        match from_json(text) {
            Ok(snapshot) => panic!("read {text:?} as {snapshot:?}"),
            Err(error) => assert_eq!(error.to_string(), want, "for {text:?}"),
        }
    }

    #[test]
    fn json_errors() {
        check_error(
            r#"{"format": 2, "engine": "postgres", "sharding": {}}"#,
            "written by a newer startgate (format 2, this one reads up to 1): upgrade \
             startgate or regenerate the file with `startgate schema --json`",
        );
        check_error(
            "{\n  \"format\": 1,\n  \"engine\": \"postgres\"\n  \"schemas\": []\n}\n",
            "malformed JSON at line 4, column 3: expected `,` or `}`",
        );
        check_error(
            " \n",
            "empty: no snapshot in it (write one with `startgate schema --json`)",
        );
        check_error(
            "{\"format\": 1, \"engine\": ",
            "malformed JSON at line 1, column 24: EOF while parsing a value",
        );
        check_error(
            r#"{"engine": "postgres"}"#,
            "no `format` field: not a snapshot from `startgate schema --json`",
        );
        check_error(
            r#"{"format": "1"}"#,
            "`format` is \"1\", not a format version (this startgate reads format 1)",
        );
        check_error(
            r#"{"format": 0}"#,
            "`format` is 0, not a format version (this startgate reads format 1)",
        );
        check_error(
            "[1]",
            "expected a JSON object (from `startgate schema --json`), found an array",
        );
        check_error(
            "{\"format\": 1,\n \"engine\": \"postgres\"}",
            "not a valid snapshot at line 2, column 22: missing field `server_version`",
        );
        // An unknown field in a file of this startgate's own format is a mistake, not news.
        let text = to_json(&base()).replacen(
            "\"nullable\": false,",
            "\"nullable\": false,\n          \"colour\": \"red\",",
            1,
        );
        check_error(
            &text,
            "not a valid snapshot at line 47, column 18: unknown field `colour`, expected one \
             of `name`, `data_type`, `nullable`, `default`, `identity`, `generated`",
        );
    }

    #[test]
    fn malformed_json_carries_its_position() {
        let error = from_json("{\n\n  oops").unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Malformed {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn text_shows_every_kind_of_object() {
        let mut snapshot = base();
        snapshot.tables[2].indexes[0].valid = false;
        let text = to_text(&snapshot);
        for line in [
            "postgres 15.20",
            "schemas: public",
            "extension pgcrypto 1.3 (schema public)",
            "enum mood: 'sad', 'ok', 'happy'",
            "sequence orders_id_seq bigint: start 1, increment 1, min 1, \
             max 9223372036854775807, no cycle",
            "table users",
            "  columns",
            "    id bigint not null identity always",
            "    mood public.mood default 'ok'::public.mood",
            "    users_pkey: PRIMARY KEY (id)",
            "    users_email_idx: CREATE UNIQUE INDEX users_email_idx ON public.users USING \
             btree (email)",
            "    orders_created_idx (INVALID): CREATE INDEX orders_created_idx ON public.orders \
             USING btree (created_at)",
            "    users_touch: CREATE TRIGGER users_touch BEFORE UPDATE ON public.users FOR EACH \
             ROW EXECUTE FUNCTION public.touch()",
            "  row-level security enabled, forced",
            "    tenant_isolation: permissive for ALL to app_user using (tenant_id = \
             (current_setting('app.tenant'::text))::uuid)",
            "view active_users",
            "     FROM public.users",
            "function tenant_orders(tenant uuid) returns bigint, language sql, body sha256 \
             aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "function touch() returns trigger, language plpgsql, body sha256 \
             bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("row-level security disabled"), "{text}");
        assert_eq!(to_text(&snapshot), text);
        assert!(text.ends_with('\n') && !text.ends_with("\n\n"), "{text}");
    }
}
