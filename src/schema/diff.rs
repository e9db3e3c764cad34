//! Drift: how the live schema differs from what the app expects, as pure functions from
//! snapshots (and `STARTGATE_REQUIRE`) to a list of differences.
//!
//! Each [`Difference`] is one line an operator can act on, naming the object the way they would
//! write it ([`display_name`]: unqualified in `public`). Messages keep a few shapes, so that a
//! list of them reads as one report:
//!
//! - `missing <thing> <name>[ on <table>][ (<detail>)]`, e.g. `missing column
//!   analytics_modules.description (text)`;
//! - `extra <thing> <name>[ on <table>]`, e.g. `extra index users_email_idx`;
//! - `<thing> <name>[ on <table>]: <part> differs (expected …, found …)` for one property, or
//!   without the values where they are too long for one line (a view's query, a policy's
//!   expressions) or meaningless (a function body's hash);
//! - `<thing> <name>[ on <table>] differs: expected …, found …` for an object that is one
//!   definition (a constraint, an index, a trigger);
//! - and the forms the issue fixed: `row-level security disabled on users`, `index
//!   orders_created_idx is INVALID`.
//!
//! The order is deterministic whatever the order of the input lists: by kind of object (schemas,
//! extensions, enums, sequences, tables, views, functions), then by name; within a table,
//! columns (in table order, extra ones last), constraints, indexes, triggers, row-level
//! security, policies. [`judge`] then splits the list into failures and warnings according to
//! `STARTGATE_VERIFY`.
//!
//! Architecture invariant: nothing here does I/O or knows an engine; it compares the strings a
//! backend put in the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{
    Column, Enum, Extension, Function, Index, Policy, Sequence, Snapshot, Table, View, display_name,
};
use crate::config::{Required, VerifyMode};

/// What kind of difference, which decides whether it fails verification ([`judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Expected but absent from the live schema (an object, or a part of one such as an enum
    /// label).
    Missing,
    /// Present on both sides but different.
    Changed,
    /// In the live schema but not expected: what an expand/contract deploy or a newer replica
    /// leaves behind.
    Extra,
    /// Broken in the live schema whatever is expected: an index left INVALID by a failed
    /// `CREATE INDEX CONCURRENTLY`.
    Invalid,
}

impl Kind {
    /// A lowercase word for logs and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Changed => "changed",
            Kind::Extra => "extra",
            Kind::Invalid => "invalid",
        }
    }
}

/// One difference between the expected and the live schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: Kind,
    /// One line, in words an operator understands.
    pub message: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How strict verification is (`STARTGATE_VERIFY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Missing, changed and invalid objects fail; extra ones only warn, since during an
    /// expand/contract deploy the old replicas run against a schema that already has more.
    Subset,
    /// Everything fails, extras too.
    Exact,
}

impl From<VerifyMode> for Mode {
    fn from(mode: VerifyMode) -> Self {
        match mode {
            VerifyMode::Subset => Mode::Subset,
            VerifyMode::Exact => Mode::Exact,
        }
    }
}

/// The differences split by consequence, each list in its input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Fail verification (exit 8).
    pub failures: Vec<Difference>,
    /// Only logged.
    pub warnings: Vec<Difference>,
}

impl Verdict {
    /// True when nothing fails (warnings may remain).
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Splits differences into failures and warnings: in [`Mode::Subset`] an extra object only
/// warns; everything else, and everything in [`Mode::Exact`], fails.
pub fn judge(differences: Vec<Difference>, mode: Mode) -> Verdict {
    let (warnings, failures) = differences
        .into_iter()
        .partition(|d| mode == Mode::Subset && d.kind == Kind::Extra);
    Verdict { failures, warnings }
}

/// Everything the verifying phase checks, in one list: the `STARTGATE_REQUIRE` items that are
/// absent, the drift from the expected snapshot when there is one, and every INVALID index.
///
/// A required table or column that the drift already reports missing (with more detail, such
/// as the column's type) is listed once.
pub fn differences(
    expected: Option<&Snapshot>,
    required: &[Required],
    live: &Snapshot,
) -> Vec<Difference> {
    let drift = expected.map(|e| diff(e, live)).unwrap_or_default();
    let mut all: Vec<Difference> = missing_required(required, live)
        .into_iter()
        .filter(|r| !drift.iter().any(|d| same_finding(d, r)))
        .collect();
    all.extend(drift);
    all.extend(invalid_indexes(live));
    all
}

/// Whether `detailed` says what `short` says, perhaps with a parenthesised detail appended
/// (`missing column t.c (text)` covers `missing column t.c`).
fn same_finding(detailed: &Difference, short: &Difference) -> bool {
    detailed.kind == short.kind
        && detailed
            .message
            .strip_prefix(&short.message)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(" ("))
}

/// Every index of the live schema left INVALID (by a failed or interrupted
/// `CREATE INDEX CONCURRENTLY`): it is maintained on every write but never used, and a unique
/// one still rejects duplicates. Reported whatever the mode, with or without an expectation.
pub fn invalid_indexes(live: &Snapshot) -> Vec<Difference> {
    let mut found: Vec<((&str, &str, &str), String)> = live
        .tables
        .iter()
        .flat_map(|t| t.indexes.iter().map(move |i| (t, i)))
        .filter(|(_, i)| !i.valid)
        .map(|(t, i)| {
            let key = (t.schema.as_str(), t.name.as_str(), i.name.as_str());
            (
                key,
                format!("index {} is INVALID", display_name(&t.schema, &i.name)),
            )
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(_, message)| Difference {
            kind: Kind::Invalid,
            message,
        })
        .collect()
}

/// The `STARTGATE_REQUIRE` items absent from the live schema, in the order they were given,
/// each reported once.
///
/// A table may be written `schema.table`. An unqualified one matches in any schema, `public`
/// first; when it is in several other schemas and not in `public`, the requirement holds if
/// any of them qualifies (the app's `search_path` decides which it uses, and the snapshot does
/// not know it). A view satisfies a table requirement, since the app can read it the same way;
/// its columns are not in the snapshot, so a column of a view cannot be checked and is reported.
pub fn missing_required(required: &[Required], live: &Snapshot) -> Vec<Difference> {
    let mut out: Vec<Difference> = Vec::new();
    for item in required {
        let Some(message) = requirement_unmet(item, live) else {
            continue;
        };
        let difference = Difference {
            kind: Kind::Missing,
            message,
        };
        if !out.contains(&difference) {
            out.push(difference);
        }
    }
    out
}

fn requirement_unmet(item: &Required, live: &Snapshot) -> Option<String> {
    let tables = find_named(&live.tables, &item.table, |t| {
        (t.schema.as_str(), t.name.as_str())
    });
    if tables.is_empty() {
        let views = find_named(&live.views, &item.table, |v| {
            (v.schema.as_str(), v.name.as_str())
        });
        return match (views.as_slice(), &item.column) {
            ([], _) => Some(format!("missing table {}", requirement_name(&item.table))),
            (_, None) => None,
            ([view, ..], Some(column)) => {
                let name = display_name(&view.schema, &view.name);
                Some(format!(
                    "missing column {name}.{column} ({name} is a view, whose columns the \
                     snapshot does not record: require the view alone)"
                ))
            }
        };
    }
    let column = item.column.as_ref()?;
    if tables
        .iter()
        .any(|t| t.columns.iter().any(|c| &c.name == column))
    {
        return None;
    }
    let table = match tables.as_slice() {
        [one] => display_name(&one.schema, &one.name),
        _ => requirement_name(&item.table),
    };
    Some(format!("missing column {table}.{column}"))
}

/// The objects a requirement names: `schema.name` exactly; a bare name in `public` if it is
/// there, else in every schema that has it.
fn find_named<'a, T>(
    objects: &'a [T],
    wanted: &str,
    name: impl Fn(&T) -> (&str, &str),
) -> Vec<&'a T> {
    if let Some(qualified) = wanted.split_once('.') {
        return objects.iter().filter(|o| name(o) == qualified).collect();
    }
    let all: Vec<&T> = objects.iter().filter(|o| name(o).1 == wanted).collect();
    match all.iter().find(|o| name(o).0 == "public") {
        Some(public) => vec![*public],
        None => all,
    }
}

/// A requirement's table as messages show names (`public.x` as `x`).
fn requirement_name(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => display_name(schema, name),
        None => table.to_string(),
    }
}

/// How `live` differs from `expected`, one [`Difference`] per line of the report.
///
/// Every part of the snapshot is compared except `format`, `engine` and `server_version`.
/// INVALID indexes of the live schema are left to [`invalid_indexes`] (so that an index that
/// is expected and present but INVALID is reported once, as INVALID); [`differences`] runs
/// both.
pub fn diff(expected: &Snapshot, live: &Snapshot) -> Vec<Difference> {
    let mut out = Out::default();
    for pair in pair(&expected.schemas, &live.schemas, |s| s.as_str()) {
        match pair {
            Pair::Missing(s) => out.missing(format!("missing schema {s}")),
            Pair::Extra(s) => out.extra(format!("extra schema {s}")),
            Pair::Both(..) => {}
        }
    }
    for pair in pair(&expected.extensions, &live.extensions, |x| x.name.as_str()) {
        match pair {
            Pair::Missing(x) => {
                out.missing(format!("missing extension {} ({})", x.name, x.version))
            }
            Pair::Extra(x) => out.extra(format!("extra extension {}", x.name)),
            Pair::Both(e, l) => extension(&mut out, e, l),
        }
    }
    for pair in pair(&expected.enums, &live.enums, |x| {
        (x.schema.as_str(), x.name.as_str())
    }) {
        match pair {
            Pair::Missing(x) => out.missing(format!(
                "missing enum {} ({})",
                display_name(&x.schema, &x.name),
                labels(&x.labels)
            )),
            Pair::Extra(x) => out.extra(format!("extra enum {}", display_name(&x.schema, &x.name))),
            Pair::Both(e, l) => enum_labels(&mut out, e, l),
        }
    }
    for pair in pair(&expected.sequences, &live.sequences, |x| {
        (x.schema.as_str(), x.name.as_str())
    }) {
        match pair {
            Pair::Missing(x) => out.missing(format!(
                "missing sequence {}",
                display_name(&x.schema, &x.name)
            )),
            Pair::Extra(x) => out.extra(format!(
                "extra sequence {}",
                display_name(&x.schema, &x.name)
            )),
            Pair::Both(e, l) => sequence(&mut out, e, l),
        }
    }
    for pair in pair(&expected.tables, &live.tables, |x| {
        (x.schema.as_str(), x.name.as_str())
    }) {
        match pair {
            // A missing or extra table is one difference, not one per column and index.
            Pair::Missing(x) => out.missing(format!(
                "missing table {}",
                display_name(&x.schema, &x.name)
            )),
            Pair::Extra(x) => {
                out.extra(format!("extra table {}", display_name(&x.schema, &x.name)))
            }
            Pair::Both(e, l) => table(&mut out, e, l),
        }
    }
    for pair in pair(&expected.views, &live.views, |x| {
        (x.schema.as_str(), x.name.as_str())
    }) {
        match pair {
            Pair::Missing(x) => out.missing(format!("missing {}", view_name(x))),
            Pair::Extra(x) => out.extra(format!("extra {}", view_name(x))),
            Pair::Both(e, l) => view(&mut out, e, l),
        }
    }
    // Overloads are distinct functions: the identity arguments are part of the key.
    let functions = pair(&expected.functions, &live.functions, |x| {
        (x.schema.as_str(), x.name.as_str(), x.arguments.as_str())
    });
    for pair in functions {
        match pair {
            Pair::Missing(x) => out.missing(format!("missing {}", function_name(x))),
            Pair::Extra(x) => out.extra(format!("extra {}", function_name(x))),
            Pair::Both(e, l) => function(&mut out, e, l),
        }
    }
    out.0
}

fn extension(out: &mut Out, e: &Extension, l: &Extension) {
    let name = format!("extension {}", e.name);
    out.changed_value(&name, "version", &e.version, &l.version);
    out.changed_value(&name, "schema", &e.schema, &l.schema);
}

/// Labels are compared as a set, then by order: a label added (as `ALTER TYPE … ADD VALUE`
/// does, at any position) is extra and only warns in subset mode; a label gone is missing; the
/// shared labels in another order change how the enum sorts.
fn enum_labels(out: &mut Out, e: &Enum, l: &Enum) {
    let name = format!("enum {}", display_name(&e.schema, &e.name));
    let expected: BTreeSet<&str> = e.labels.iter().map(String::as_str).collect();
    let live: BTreeSet<&str> = l.labels.iter().map(String::as_str).collect();
    let gone: Vec<&String> = e
        .labels
        .iter()
        .filter(|x| !live.contains(x.as_str()))
        .collect();
    let added: Vec<&String> = l
        .labels
        .iter()
        .filter(|x| !expected.contains(x.as_str()))
        .collect();
    if !gone.is_empty() {
        out.missing(format!("{name}: missing {}", counted_labels(&gone)));
    }
    if !added.is_empty() {
        out.extra(format!("{name}: extra {}", counted_labels(&added)));
    }
    let shared_expected: Vec<&String> = e
        .labels
        .iter()
        .filter(|x| live.contains(x.as_str()))
        .collect();
    let shared_live: Vec<&String> = l
        .labels
        .iter()
        .filter(|x| expected.contains(x.as_str()))
        .collect();
    if shared_expected != shared_live {
        out.changed(format!(
            "{name}: label order differs (expected {}, found {})",
            labels(&e.labels),
            labels(&l.labels)
        ));
    }
}

fn counted_labels(list: &[&String]) -> String {
    let word = if list.len() == 1 { "label" } else { "labels" };
    let quoted: Vec<String> = list.iter().map(|x| quote(x)).collect();
    format!("{word} {}", quoted.join(", "))
}

/// Enum labels are values, so they are quoted as SQL writes them (a label may hold spaces or
/// commas).
fn labels(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|x| quote(x)).collect();
    quoted.join(", ")
}

fn quote(label: &str) -> String {
    format!("'{}'", label.replace('\'', "''"))
}

fn sequence(out: &mut Out, e: &Sequence, l: &Sequence) {
    let name = format!("sequence {}", display_name(&e.schema, &e.name));
    out.changed_value(&name, "data type", &e.data_type, &l.data_type);
    out.changed_value(&name, "increment", &e.increment, &l.increment);
    out.changed_value(&name, "minimum", &e.min_value, &l.min_value);
    out.changed_value(&name, "maximum", &e.max_value, &l.max_value);
    out.changed_value(&name, "start", &e.start, &l.start);
    let cycle = |c: bool| if c { "cycle" } else { "no cycle" };
    out.changed_value(&name, "cycling", cycle(e.cycle), cycle(l.cycle));
}

fn table(out: &mut Out, e: &Table, l: &Table) {
    let name = display_name(&e.schema, &e.name);
    columns(out, &name, &e.columns, &l.columns);
    constraints(out, &name, e, l);
    indexes(out, e, l);
    for pair in pair(&e.triggers, &l.triggers, |x| x.name.as_str()) {
        match pair {
            Pair::Missing(x) => out.missing(format!("missing trigger {} on {name}", x.name)),
            Pair::Extra(x) => out.extra(format!("extra trigger {} on {name}", x.name)),
            Pair::Both(et, lt) => out.changed_definition(
                &format!("trigger {} on {name}", et.name),
                &et.definition,
                &lt.definition,
            ),
        }
    }
    match (e.rls_enabled, l.rls_enabled) {
        (true, false) => out.changed(format!("row-level security disabled on {name}")),
        (false, true) => out.changed(format!("row-level security enabled on {name}")),
        _ => {}
    }
    match (e.rls_forced, l.rls_forced) {
        (true, false) => out.changed(format!("row-level security no longer forced on {name}")),
        (false, true) => out.changed(format!("row-level security forced on {name}")),
        _ => {}
    }
    for pair in pair(&e.policies, &l.policies, |x| x.name.as_str()) {
        match pair {
            Pair::Missing(x) => out.missing(format!("missing policy {} on {name}", x.name)),
            Pair::Extra(x) => out.extra(format!("extra policy {} on {name}", x.name)),
            Pair::Both(ep, lp) => policy(out, &name, ep, lp),
        }
    }
}

/// Columns are matched by name and reported in the expected table order, extra ones after;
/// then the relative order of the shared columns is compared (`SELECT *` and `INSERT` without
/// a column list depend on it, and only a dropped and re-added column changes it).
fn columns(out: &mut Out, table: &str, e: &[Column], l: &[Column]) {
    let expected: BTreeMap<&str, &Column> = e.iter().map(|c| (c.name.as_str(), c)).collect();
    let live: BTreeMap<&str, &Column> = l.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in e {
        match live.get(c.name.as_str()) {
            None => out.missing(format!(
                "missing column {table}.{} ({})",
                c.name, c.data_type
            )),
            Some(found) => column(out, &format!("column {table}.{}", c.name), c, found),
        }
    }
    for c in l.iter().filter(|c| !expected.contains_key(c.name.as_str())) {
        out.extra(format!("extra column {table}.{}", c.name));
    }
    let shared_expected: Vec<&str> = e
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| live.contains_key(n))
        .collect();
    let shared_live: Vec<&str> = l
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| expected.contains_key(n))
        .collect();
    if shared_expected != shared_live {
        out.changed(format!(
            "table {table}: column order differs (expected {}, found {})",
            shared_expected.join(", "),
            shared_live.join(", ")
        ));
    }
}

fn column(out: &mut Out, name: &str, e: &Column, l: &Column) {
    out.changed_value(name, "type", &e.data_type, &l.data_type);
    let nullability = |nullable: bool| if nullable { "nullable" } else { "not null" };
    out.changed_value(
        name,
        "nullability",
        nullability(e.nullable),
        nullability(l.nullable),
    );
    out.changed_option(name, "default", &e.default, &l.default);
    out.changed_option(name, "identity", &e.identity, &l.identity);
    out.changed_option(name, "generated expression", &e.generated, &l.generated);
}

/// A primary key or unique constraint comes with an index of the same name; when the
/// constraint is reported, its index is not reported again.
fn constraints(out: &mut Out, table: &str, e: &Table, l: &Table) {
    for pair in pair(&e.constraints, &l.constraints, |x| x.name.as_str()) {
        match pair {
            Pair::Missing(x) => out.missing(format!(
                "missing {} constraint {} on {table} ({})",
                x.kind,
                x.name,
                one_line(&x.definition)
            )),
            Pair::Extra(x) => {
                out.extra(format!("extra {} constraint {} on {table}", x.kind, x.name))
            }
            Pair::Both(ec, lc) if ec.definition != lc.definition => out.changed_definition(
                &format!("{} constraint {} on {table}", ec.kind, ec.name),
                &ec.definition,
                &lc.definition,
            ),
            Pair::Both(ec, lc) => out.changed_value(
                &format!("constraint {} on {table}", ec.name),
                "kind",
                &ec.kind,
                &lc.kind,
            ),
        }
    }
}

fn indexes(out: &mut Out, e: &Table, l: &Table) {
    // Left to `invalid_indexes`, so that a broken index is reported once, as INVALID.
    let invalid: BTreeSet<&str> = l
        .indexes
        .iter()
        .filter(|i| !i.valid)
        .map(|i| i.name.as_str())
        .collect();
    let has_constraint = |t: &Table, name: &str| t.constraints.iter().any(|c| c.name == name);
    let constraint_differs = |name: &str| {
        let expected = e.constraints.iter().find(|c| c.name == name);
        let live = l.constraints.iter().find(|c| c.name == name);
        matches!((expected, live), (Some(a), Some(b)) if a != b)
    };
    let usable = |i: &&Index| !invalid.contains(i.name.as_str());
    let expected: Vec<&Index> = e.indexes.iter().filter(usable).collect();
    let live: Vec<&Index> = l.indexes.iter().filter(usable).collect();
    for pair in pair(&expected, &live, |x| x.name.as_str()) {
        let name = |x: &Index| display_name(&e.schema, &x.name);
        match pair {
            Pair::Missing(x) if !has_constraint(e, &x.name) => {
                out.missing(format!("missing index {}", name(x)))
            }
            Pair::Extra(x) if !has_constraint(l, &x.name) => {
                out.extra(format!("extra index {}", name(x)))
            }
            Pair::Both(ei, li) if !constraint_differs(&ei.name) => {
                let what = format!("index {}", name(ei));
                if ei.definition != li.definition {
                    out.changed_definition(&what, &ei.definition, &li.definition);
                } else {
                    let uniqueness = |u: bool| if u { "unique" } else { "not unique" };
                    out.changed_value(
                        &what,
                        "uniqueness",
                        uniqueness(ei.unique),
                        uniqueness(li.unique),
                    );
                }
            }
            _ => {}
        }
    }
}

/// One line per policy, naming the parts that differ: the expressions are too long to repeat,
/// and `startgate schema` shows the live ones beside the expected file.
fn policy(out: &mut Out, table: &str, e: &Policy, l: &Policy) {
    let sorted = |roles: &[String]| {
        let mut roles = roles.to_vec();
        roles.sort();
        roles
    };
    let parts: Vec<&str> = [
        ("command", e.command != l.command),
        ("roles", sorted(&e.roles) != sorted(&l.roles)),
        ("permissive", e.permissive != l.permissive),
        ("USING", e.using != l.using),
        ("WITH CHECK", e.with_check != l.with_check),
    ]
    .into_iter()
    .filter_map(|(part, differs)| differs.then_some(part))
    .collect();
    // "roles" is plural on its own: "roles differ", "USING differs".
    let verb = if parts.len() == 1 && parts[0] != "roles" {
        "differs"
    } else {
        "differ"
    };
    if let Some((last, first)) = parts.split_last() {
        let list = if first.is_empty() {
            (*last).to_string()
        } else {
            format!("{} and {last}", first.join(", "))
        };
        out.changed(format!("policy {} on {table}: {list} {verb}", e.name));
    }
}

fn view_name(v: &View) -> String {
    let kind = if v.materialized {
        "materialized view"
    } else {
        "view"
    };
    format!("{kind} {}", display_name(&v.schema, &v.name))
}

fn view(out: &mut Out, e: &View, l: &View) {
    let name = view_name(e);
    let kind = |v: &View| {
        if v.materialized {
            "materialized view"
        } else {
            "view"
        }
    };
    out.changed_value(&name, "kind", kind(e), kind(l));
    // A query is many lines: say that it differs; `startgate schema` prints both.
    if e.definition != l.definition {
        out.changed(format!("{name}: definition differs"));
    }
}

fn function_name(f: &Function) -> String {
    format!(
        "{} {}({})",
        f.kind,
        display_name(&f.schema, &f.name),
        f.arguments
    )
}

fn function(out: &mut Out, e: &Function, l: &Function) {
    let name = function_name(e);
    out.changed_value(&name, "kind", &e.kind, &l.kind);
    out.changed_option(&name, "result type", &e.returns, &l.returns);
    out.changed_value(&name, "language", &e.language, &l.language);
    // Only a hash of the body is kept: showing two hashes would tell the operator nothing.
    if e.body_sha256 != l.body_sha256 {
        out.changed(format!("{name}: body differs"));
    }
}

/// The differences found so far, in report order.
#[derive(Default)]
struct Out(Vec<Difference>);

impl Out {
    fn push(&mut self, kind: Kind, message: String) {
        self.0.push(Difference { kind, message });
    }

    fn missing(&mut self, message: String) {
        self.push(Kind::Missing, message);
    }

    fn extra(&mut self, message: String) {
        self.push(Kind::Extra, message);
    }

    fn changed(&mut self, message: String) {
        self.push(Kind::Changed, message);
    }

    /// `<name>: <part> differs (expected …, found …)` when the values differ.
    fn changed_value(&mut self, name: &str, part: &str, expected: &str, found: &str) {
        if expected != found {
            self.changed(format!(
                "{name}: {part} differs (expected {}, found {})",
                one_line(expected),
                one_line(found)
            ));
        }
    }

    fn changed_option(
        &mut self,
        name: &str,
        part: &str,
        expected: &Option<String>,
        found: &Option<String>,
    ) {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
        if expected != found {
            self.changed_value(name, part, &shown(expected), &shown(found));
        }
    }

    /// `<name> differs: expected …, found …` for an object that is one definition, which
    /// usually holds parentheses of its own.
    fn changed_definition(&mut self, name: &str, expected: &str, found: &str) {
        if expected != found {
            self.changed(format!(
                "{name} differs: expected {}, found {}",
                one_line(expected),
                one_line(found)
            ));
        }
    }
}

/// A value as one line: a difference is one line of a report.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An object of the expected side, of the live side, or of both, paired by key.
enum Pair<'a, T> {
    Missing(&'a T),
    Extra(&'a T),
    Both(&'a T, &'a T),
}

/// Pairs the objects of both sides by key, in key order, so that the report does not depend
/// on the order of the input lists. A key given twice on one side keeps its last object.
fn pair<'a, T, K: Ord>(
    expected: &'a [T],
    live: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<Pair<'a, T>> {
    let mut both: BTreeMap<K, (Option<&'a T>, Option<&'a T>)> = BTreeMap::new();
    for x in expected {
        both.entry(key(x)).or_default().0 = Some(x);
    }
    for x in live {
        both.entry(key(x)).or_default().1 = Some(x);
    }
    both.into_values()
        .filter_map(|sides| match sides {
            (Some(e), Some(l)) => Some(Pair::Both(e, l)),
            (Some(e), None) => Some(Pair::Missing(e)),
            (None, Some(l)) => Some(Pair::Extra(l)),
            (None, None) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::base;
    use crate::schema::{Constraint, Trigger};
    use Kind::{Changed, Extra, Invalid, Missing};

    fn table<'a>(snapshot: &'a mut Snapshot, name: &str) -> &'a mut Table {
        let found = snapshot.tables.iter_mut().find(|t| t.name == name);
        found.unwrap_or_else(|| panic!("no table {name} in the fixture"))
    }

    fn column<'a>(snapshot: &'a mut Snapshot, table_name: &str, name: &str) -> &'a mut Column {
        let found = table(snapshot, table_name)
            .columns
            .iter_mut()
            .find(|c| c.name == name);
        found.unwrap_or_else(|| panic!("no column {table_name}.{name} in the fixture"))
    }

    fn index<'a>(snapshot: &'a mut Snapshot, table_name: &str, name: &str) -> &'a mut Index {
        let found = table(snapshot, table_name)
            .indexes
            .iter_mut()
            .find(|i| i.name == name);
        found.unwrap_or_else(|| panic!("no index {name} in the fixture"))
    }

    fn same(_: &mut Snapshot) {}

    /// The base fixture edited on each side, then everything verification reports without
    /// `STARTGATE_REQUIRE`, in order.
    #[track_caller]
    fn check(
        edit_expected: impl FnOnce(&mut Snapshot),
        edit_live: impl FnOnce(&mut Snapshot),
        want: &[(Kind, &str)],
    ) {
        let (mut expected, mut live) = (base(), base());
        edit_expected(&mut expected);
        edit_live(&mut live);
        let got: Vec<(Kind, String)> = differences(Some(&expected), &[], &live)
            .into_iter()
            .map(|d| (d.kind, d.message))
            .collect();
        let want: Vec<(Kind, String)> = want.iter().map(|(k, m)| (*k, m.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn identical_snapshots_have_no_differences() {
        check(same, same, &[]);
        // Neither the server version nor the order of the lists counts.
        check(
            same,
            |s| {
                s.server_version = "16.4".to_string();
                s.tables.reverse();
                table(s, "users").indexes.reverse();
            },
            &[],
        );
    }

    #[test]
    fn tables() {
        check(
            same,
            |s| s.tables.retain(|t| t.name != "feature_flags"),
            &[(Missing, "missing table feature_flags")],
        );
        check(
            |s| s.tables.retain(|t| t.name != "feature_flags"),
            same,
            &[(Extra, "extra table feature_flags")],
        );
        check(
            same,
            |s| {
                s.schemas.push("audit".to_string());
                let mut log = table(s, "feature_flags").clone();
                log.schema = "audit".to_string();
                s.tables.push(log);
            },
            &[
                (Extra, "extra schema audit"),
                (Extra, "extra table audit.feature_flags"),
            ],
        );
    }

    #[test]
    fn columns() {
        check(
            same,
            |s| {
                table(s, "analytics_modules")
                    .columns
                    .retain(|c| c.name != "description")
            },
            &[(
                Missing,
                "missing column analytics_modules.description (text)",
            )],
        );
        check(
            same,
            |s| {
                let mut extra = column(s, "users", "email").clone();
                extra.name = "nickname".to_string();
                table(s, "users").columns.push(extra);
            },
            &[(Extra, "extra column users.nickname")],
        );
        check(
            same,
            |s| column(s, "users", "email").data_type = "character varying(255)".to_string(),
            &[(
                Changed,
                "column users.email: type differs (expected text, found character varying(255))",
            )],
        );
        check(
            same,
            |s| column(s, "users", "email").nullable = true,
            &[(
                Changed,
                "column users.email: nullability differs (expected not null, found nullable)",
            )],
        );
        check(
            same,
            |s| column(s, "feature_flags", "enabled").default = Some("true".to_string()),
            &[(
                Changed,
                "column feature_flags.enabled: default differs (expected false, found true)",
            )],
        );
        check(
            same,
            |s| column(s, "feature_flags", "enabled").default = None,
            &[(
                Changed,
                "column feature_flags.enabled: default differs (expected false, found none)",
            )],
        );
        check(
            same,
            |s| column(s, "users", "id").identity = Some("by default".to_string()),
            &[(
                Changed,
                "column users.id: identity differs (expected always, found by default)",
            )],
        );
        check(
            same,
            |s| column(s, "products", "name").generated = Some("(upper(name))".to_string()),
            &[(
                Changed,
                "column products.name: generated expression differs (expected none, found \
                 (upper(name)))",
            )],
        );
        // A dropped and re-added column moves to the end.
        check(
            same,
            |s| table(s, "users").columns.swap(1, 2),
            &[(
                Changed,
                "table users: column order differs (expected id, tenant_id, email, mood, found \
                 id, email, tenant_id, mood)",
            )],
        );
    }

    #[test]
    fn constraints() {
        check(
            same,
            |s| table(s, "products").constraints[0].definition = "CHECK ((price >= 0))".to_string(),
            &[(
                Changed,
                "check constraint price_positive on products differs: expected CHECK ((price > \
                 0)), found CHECK ((price >= 0))",
            )],
        );
        check(
            same,
            |s| {
                table(s, "orders")
                    .constraints
                    .retain(|c| c.kind != "foreign key")
            },
            &[(
                Missing,
                "missing foreign key constraint orders_user_id_fkey on orders (FOREIGN KEY \
                 (user_id) REFERENCES public.users(id))",
            )],
        );
        check(
            same,
            |s| {
                table(s, "users").constraints.push(Constraint {
                    name: "email_lower".to_string(),
                    kind: "check".to_string(),
                    definition: "CHECK ((email = lower(email)))".to_string(),
                });
            },
            &[(Extra, "extra check constraint email_lower on users")],
        );
        // A primary key is one finding, not also one about the index behind it.
        check(
            same,
            |s| {
                let users = table(s, "users");
                users.constraints.clear();
                users.indexes.retain(|i| i.name != "users_pkey");
            },
            &[(
                Missing,
                "missing primary key constraint users_pkey on users (PRIMARY KEY (id))",
            )],
        );
        check(
            same,
            |s| {
                let users = table(s, "users");
                users.constraints[0].definition = "PRIMARY KEY (id, tenant_id)".to_string();
                users.indexes[1].definition = "CREATE UNIQUE INDEX users_pkey ON public.users \
                                               USING btree (id, tenant_id)"
                    .to_string();
            },
            &[(
                Changed,
                "primary key constraint users_pkey on users differs: expected PRIMARY KEY (id), \
                 found PRIMARY KEY (id, tenant_id)",
            )],
        );
    }

    #[test]
    fn indexes() {
        check(
            |s| {
                table(s, "users")
                    .indexes
                    .retain(|i| i.name != "users_email_idx")
            },
            same,
            &[(Extra, "extra index users_email_idx")],
        );
        check(
            same,
            |s| {
                table(s, "users")
                    .indexes
                    .retain(|i| i.name != "users_email_idx")
            },
            &[(Missing, "missing index users_email_idx")],
        );
        check(
            same,
            |s| {
                let i = index(s, "users", "users_email_idx");
                i.definition =
                    "CREATE INDEX users_email_idx ON public.users USING btree (email)".to_string();
                i.unique = false;
            },
            &[(
                Changed,
                "index users_email_idx differs: expected CREATE UNIQUE INDEX users_email_idx ON \
                 public.users USING btree (email), found CREATE INDEX users_email_idx ON \
                 public.users USING btree (email)",
            )],
        );
        check(
            same,
            |s| index(s, "users", "users_email_idx").unique = false,
            &[(
                Changed,
                "index users_email_idx: uniqueness differs (expected unique, found not unique)",
            )],
        );
    }

    #[test]
    fn invalid_indexes_are_reported_once() {
        check(
            same,
            |s| index(s, "orders", "orders_created_idx").valid = false,
            &[(Invalid, "index orders_created_idx is INVALID")],
        );
        // Expected valid, INVALID with another definition: the rebuild fixes both.
        check(
            same,
            |s| {
                let i = index(s, "orders", "orders_created_idx");
                i.valid = false;
                i.definition = "CREATE INDEX orders_created_idx ON public.orders USING btree \
                                (created_at, user_id)"
                    .to_string();
            },
            &[(Invalid, "index orders_created_idx is INVALID")],
        );
        // Not expected at all.
        check(
            |s| {
                table(s, "orders")
                    .indexes
                    .retain(|i| i.name != "orders_created_idx")
            },
            |s| index(s, "orders", "orders_created_idx").valid = false,
            &[(Invalid, "index orders_created_idx is INVALID")],
        );
        // Without an expected snapshot, in table then index order.
        let mut live = base();
        live.schemas.push("audit".to_string());
        let mut audit = table(&mut live, "orders").clone();
        audit.schema = "audit".to_string();
        live.tables.insert(0, audit);
        index(&mut live, "users", "users_email_idx").valid = false;
        for t in live.tables.iter_mut().filter(|t| t.name == "orders") {
            t.indexes[0].valid = false;
        }
        let got: Vec<String> = differences(None, &[], &live)
            .iter()
            .map(Difference::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "index audit.orders_created_idx is INVALID",
                "index orders_created_idx is INVALID",
                "index users_email_idx is INVALID",
            ]
        );
    }

    #[test]
    fn triggers() {
        check(
            same,
            |s| table(s, "users").triggers.clear(),
            &[(Missing, "missing trigger users_touch on users")],
        );
        check(
            same,
            |s| {
                table(s, "users").triggers[0].definition = "CREATE TRIGGER users_touch BEFORE \
                    INSERT OR UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.touch()"
                    .to_string();
            },
            &[(
                Changed,
                "trigger users_touch on users differs: expected CREATE TRIGGER users_touch \
                 BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.touch(), \
                 found CREATE TRIGGER users_touch BEFORE INSERT OR UPDATE ON public.users FOR \
                 EACH ROW EXECUTE FUNCTION public.touch()",
            )],
        );
        check(
            same,
            |s| {
                table(s, "orders").triggers.push(Trigger {
                    name: "orders_audit".to_string(),
                    definition: "CREATE TRIGGER orders_audit …".to_string(),
                });
            },
            &[(Extra, "extra trigger orders_audit on orders")],
        );
    }

    #[test]
    fn row_level_security() {
        check(
            same,
            |s| table(s, "users").rls_enabled = false,
            &[(Changed, "row-level security disabled on users")],
        );
        check(
            same,
            |s| table(s, "products").rls_enabled = true,
            &[(Changed, "row-level security enabled on products")],
        );
        check(
            same,
            |s| table(s, "users").rls_forced = false,
            &[(Changed, "row-level security no longer forced on users")],
        );
        check(
            same,
            |s| table(s, "products").rls_forced = true,
            &[(Changed, "row-level security forced on products")],
        );
    }

    #[test]
    fn policies() {
        check(
            same,
            |s| table(s, "users").policies[0].using = Some("true".to_string()),
            &[(Changed, "policy tenant_isolation on users: USING differs")],
        );
        check(
            same,
            |s| {
                let p = &mut table(s, "users").policies[0];
                p.roles = vec!["public".to_string()];
                p.with_check = Some("true".to_string());
            },
            &[(
                Changed,
                "policy tenant_isolation on users: roles and WITH CHECK differ",
            )],
        );
        check(
            same,
            |s| {
                let p = &mut table(s, "users").policies[0];
                p.command = "SELECT".to_string();
                p.permissive = false;
                p.using = None;
            },
            &[(
                Changed,
                "policy tenant_isolation on users: command, permissive and USING differ",
            )],
        );
        // Lost in an emergency fix.
        check(
            same,
            |s| table(s, "users").policies.clear(),
            &[(Missing, "missing policy tenant_isolation on users")],
        );
        check(
            |s| table(s, "users").policies.clear(),
            same,
            &[(Extra, "extra policy tenant_isolation on users")],
        );
    }

    #[test]
    fn enums() {
        check(
            same,
            |s| s.enums[0].labels.push("ecstatic".to_string()),
            &[(Extra, "enum mood: extra label 'ecstatic'")],
        );
        check(
            same,
            |s| s.enums[0].labels = vec!["ok".to_string()],
            &[(Missing, "enum mood: missing labels 'sad', 'happy'")],
        );
        check(
            same,
            |s| s.enums[0].labels.reverse(),
            &[(
                Changed,
                "enum mood: label order differs (expected 'sad', 'ok', 'happy', found 'happy', \
                 'ok', 'sad')",
            )],
        );
        check(
            same,
            |s| s.enums.clear(),
            &[(Missing, "missing enum mood ('sad', 'ok', 'happy')")],
        );
    }

    #[test]
    fn other_objects() {
        check(
            same,
            |s| s.extensions[0].version = "1.2".to_string(),
            &[(
                Changed,
                "extension pgcrypto: version differs (expected 1.3, found 1.2)",
            )],
        );
        check(
            same,
            |s| s.extensions.clear(),
            &[(Missing, "missing extension pgcrypto (1.3)")],
        );
        check(
            same,
            |s| {
                s.sequences[0].increment = "10".to_string();
                s.sequences[0].cycle = true;
            },
            &[
                (
                    Changed,
                    "sequence orders_id_seq: increment differs (expected 1, found 10)",
                ),
                (
                    Changed,
                    "sequence orders_id_seq: cycling differs (expected no cycle, found cycle)",
                ),
            ],
        );
        check(
            same,
            |s| s.views[0].definition.push_str(" -- changed"),
            &[(Changed, "view active_users: definition differs")],
        );
        check(
            same,
            |s| s.views[0].materialized = true,
            &[(
                Changed,
                "view active_users: kind differs (expected view, found materialized view)",
            )],
        );
        check(
            same,
            |s| s.views.clear(),
            &[(Missing, "missing view active_users")],
        );
        check(
            same,
            |s| s.functions[0].body_sha256 = "c".repeat(64),
            &[(Changed, "function tenant_orders(tenant uuid): body differs")],
        );
        check(
            same,
            |s| {
                s.functions[0].returns = Some("integer".to_string());
                s.functions[0].language = "plpgsql".to_string();
            },
            &[
                (
                    Changed,
                    "function tenant_orders(tenant uuid): result type differs (expected bigint, \
                     found integer)",
                ),
                (
                    Changed,
                    "function tenant_orders(tenant uuid): language differs (expected sql, found \
                     plpgsql)",
                ),
            ],
        );
        // An overload is another function.
        check(
            same,
            |s| s.functions[0].arguments = "tenant uuid, since date".to_string(),
            &[
                (Missing, "missing function tenant_orders(tenant uuid)"),
                (
                    Extra,
                    "extra function tenant_orders(tenant uuid, since date)",
                ),
            ],
        );
        check(
            same,
            |s| s.schemas.clear(),
            &[(Missing, "missing schema public")],
        );
    }

    #[test]
    fn names_outside_public_are_qualified() {
        let to_analytics = |s: &mut Snapshot| {
            s.schemas.insert(0, "analytics".to_string());
            table(s, "analytics_modules").schema = "analytics".to_string();
        };
        check(
            to_analytics,
            |s| {
                to_analytics(s);
                table(s, "analytics_modules").columns.pop();
                table(s, "analytics_modules").indexes.clear();
            },
            &[(
                Missing,
                "missing column analytics.analytics_modules.description (text)",
            )],
        );
        check(
            to_analytics,
            same,
            &[
                (Missing, "missing schema analytics"),
                (Missing, "missing table analytics.analytics_modules"),
                (Extra, "extra table analytics_modules"),
            ],
        );
    }

    #[test]
    fn report_order_is_by_object_then_kind() {
        check(
            |s| {
                table(s, "users")
                    .indexes
                    .retain(|i| i.name != "users_email_idx")
            },
            |s| {
                s.functions[0].body_sha256 = "c".repeat(64);
                s.tables.retain(|t| t.name != "feature_flags");
                table(s, "users").rls_enabled = false;
                table(s, "users").columns.retain(|c| c.name != "mood");
                s.enums[0].labels.push("ecstatic".to_string());
                index(s, "orders", "orders_created_idx").valid = false;
            },
            &[
                (Extra, "enum mood: extra label 'ecstatic'"),
                (Missing, "missing table feature_flags"),
                (Missing, "missing column users.mood (public.mood)"),
                (Extra, "extra index users_email_idx"),
                (Changed, "row-level security disabled on users"),
                (Changed, "function tenant_orders(tenant uuid): body differs"),
                (Invalid, "index orders_created_idx is INVALID"),
            ],
        );
    }

    #[track_caller]
    fn check_verdict(mode: Mode, failures: &[&str], warnings: &[&str]) {
        let mut expected = base();
        table(&mut expected, "users")
            .indexes
            .retain(|i| i.name != "users_email_idx");
        let mut live = base();
        column(&mut live, "users", "email").nullable = true;
        index(&mut live, "orders", "orders_created_idx").valid = false;
        let verdict = judge(differences(Some(&expected), &[], &live), mode);
        let messages = |list: &[Difference]| -> Vec<String> {
            list.iter().map(Difference::to_string).collect()
        };
        assert_eq!(
            messages(&verdict.failures),
            failures,
            "failures in {mode:?}"
        );
        assert_eq!(
            messages(&verdict.warnings),
            warnings,
            "warnings in {mode:?}"
        );
        assert_eq!(verdict.passed(), failures.is_empty());
    }

    #[test]
    fn subset_warns_on_extras_and_exact_fails() {
        let changed = "column users.email: nullability differs (expected not null, found nullable)";
        let extra = "extra index users_email_idx";
        let invalid = "index orders_created_idx is INVALID";
        check_verdict(Mode::Subset, &[changed, invalid], &[extra]);
        check_verdict(Mode::Exact, &[changed, extra, invalid], &[]);
        assert_eq!(Mode::from(VerifyMode::Exact), Mode::Exact);
        assert!(judge(Vec::new(), Mode::Exact).passed());
    }

    #[track_caller]
    fn check_required(
        required: &[(&str, Option<&str>)],
        edit_live: impl FnOnce(&mut Snapshot),
        want: &[&str],
    ) {
        let required: Vec<Required> = required
            .iter()
            .map(|(table, column)| Required {
                table: table.to_string(),
                column: column.map(str::to_string),
            })
            .collect();
        let mut live = base();
        edit_live(&mut live);
        let got = missing_required(&required, &live);
        assert!(got.iter().all(|d| d.kind == Missing), "{got:?}");
        let got: Vec<String> = got.iter().map(Difference::to_string).collect();
        assert_eq!(got, want);
    }

    /// A copy of `feature_flags` in another schema, without its `enabled` column when `bare`.
    fn flags_in(schema: &'static str, bare: bool) -> impl Fn(&mut Snapshot) {
        move |s| {
            let mut copy = table(s, "feature_flags").clone();
            copy.schema = schema.to_string();
            if bare {
                copy.columns.retain(|c| c.name != "enabled");
            }
            s.tables.push(copy);
        }
    }

    #[test]
    fn required_tables_and_columns() {
        let everything = [
            ("feature_flags", None),
            ("analytics_modules", Some("description")),
            ("public.users", Some("email")),
        ];
        check_required(&everything, same, &[]);
        check_required(
            &everything,
            |s| s.tables.retain(|t| t.name != "feature_flags"),
            &["missing table feature_flags"],
        );
        check_required(
            &everything,
            |s| {
                table(s, "analytics_modules")
                    .columns
                    .retain(|c| c.name != "description")
            },
            &["missing column analytics_modules.description"],
        );
        // Two columns of a missing table, and a repeated item: one line.
        check_required(
            &[
                ("feature_flags", Some("name")),
                ("feature_flags", Some("enabled")),
                ("feature_flags", None),
            ],
            |s| s.tables.retain(|t| t.name != "feature_flags"),
            &["missing table feature_flags"],
        );
        check_required(
            &[
                ("audit.feature_flags", None),
                ("public.feature_flags", Some("owner")),
            ],
            same,
            &[
                "missing table audit.feature_flags",
                "missing column feature_flags.owner",
            ],
        );
        // Unqualified: found in another schema, where the column is then looked for.
        check_required(
            &[("feature_flags", None), ("feature_flags", Some("enabled"))],
            |s| {
                flags_in("audit", true)(s);
                s.tables
                    .retain(|t| t.schema != "public" || t.name != "feature_flags");
            },
            &["missing column audit.feature_flags.enabled"],
        );
        // `public` comes first, even when another schema has the column.
        check_required(
            &[("feature_flags", Some("enabled"))],
            |s| {
                flags_in("audit", false)(s);
                table(s, "feature_flags")
                    .columns
                    .retain(|c| c.name != "enabled");
            },
            &["missing column feature_flags.enabled"],
        );
        // In two other schemas: present if either has it.
        let two_schemas = |s: &mut Snapshot| {
            flags_in("audit", true)(s);
            flags_in("billing", false)(s);
            s.tables
                .retain(|t| t.schema != "public" || t.name != "feature_flags");
        };
        check_required(&[("feature_flags", Some("enabled"))], two_schemas, &[]);
        check_required(
            &[("feature_flags", Some("owner"))],
            two_schemas,
            &["missing column feature_flags.owner"],
        );
        // A view serves as a table; its columns are not recorded.
        check_required(&[("active_users", None)], same, &[]);
        check_required(
            &[("active_users", Some("email"))],
            same,
            &[
                "missing column active_users.email (active_users is a view, whose columns the \
               snapshot does not record: require the view alone)",
            ],
        );
    }

    #[test]
    fn required_items_already_in_the_drift_are_listed_once() {
        let mut live = base();
        table(&mut live, "analytics_modules").columns.pop();
        live.tables.retain(|t| t.name != "feature_flags");
        let required = [
            Required {
                table: "analytics_modules".to_string(),
                column: Some("description".to_string()),
            },
            Required {
                table: "feature_flags".to_string(),
                column: None,
            },
            Required {
                table: "users".to_string(),
                column: Some("nickname".to_string()),
            },
        ];
        let got: Vec<String> = differences(Some(&base()), &required, &live)
            .iter()
            .map(Difference::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "missing column users.nickname",
                "missing column analytics_modules.description (text)",
                "missing table feature_flags",
            ]
        );
    }
}
