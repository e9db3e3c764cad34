//! Alembic awareness, the pure part (DESIGN.md "Existing migration tools", issue 6): read each
//! revision file's `revision`, `down_revision`, `branch_labels` and `depends_on`, build the
//! revision graph, compute its heads, and compare them with the version table's rows, so that an
//! up-to-date project costs one query and never starts Python.
//!
//! Rules:
//! - only module-level assignments count (a line starting at column 0), with or without a type
//!   annotation (`down_revision: Union[str, None] = "1975ea83b712"`); text inside triple-quoted
//!   strings (the docstring's `Revision ID:` lines) is never read as code;
//! - values are `None`, a string literal, or a tuple or list of string literals, possibly over
//!   several lines; anything else is a [`RevisionError`] naming the file and the variable, never
//!   a guess;
//! - heads are the revisions no other revision names as its `down_revision` (Alembic's own
//!   definition: `depends_on` orders upgrades but does not hide a head);
//! - a database revision the files do not know is `future`: Alembic cannot upgrade from it.
//!
//! Reading the files and the config, running Alembic and the version-table query are the I/O
//! around this, elsewhere. `config.rs` is the pure config reading (the command's `-c`/`-n`,
//! `alembic.ini`, `[tool.alembic]`); `project.rs` is the I/O that finds the config as Alembic
//! would, reads it and reads every revision file.

pub mod config;
pub mod project;

use std::collections::{BTreeMap, BTreeSet};

/// One revision file's identity and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub revision: String,
    pub down_revisions: Vec<String>,
    pub branch_labels: Vec<String>,
    pub depends_on: Vec<String>,
}

/// A revision file that cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct RevisionError {
    pub file: String,
    pub problem: String,
}

/// Parses one revision file's source. `file` names it in errors.
pub fn parse_revision(file: &str, source: &str) -> Result<Revision, RevisionError> {
    let error = |problem: String| RevisionError {
        file: file.to_string(),
        problem,
    };
    let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let code = code_lines(source);
    let mut i = 0;
    while i < code.len() {
        let line = code[i];
        i += 1;
        let Some((name, rest)) = assignment(line) else {
            continue;
        };
        // The value may continue over the next lines until its brackets close.
        let mut text = rest.to_string();
        while !balanced(&text) && i < code.len() {
            text.push(' ');
            text.push_str(code[i]);
            i += 1;
        }
        let parsed = parse_value(&text)
            .map_err(|problem| error(format!("{name} = {}: {problem}", text.trim())))?;
        values.insert(name, parsed);
    }
    let revision = match values.remove("revision").as_deref() {
        Some([one]) => one.clone(),
        Some(_) => return Err(error("revision must be one string".to_string())),
        None => {
            return Err(error(
                "no module-level `revision = \"…\"` assignment".to_string(),
            ));
        }
    };
    if !values.contains_key("down_revision") {
        return Err(error(
            "no module-level `down_revision = …` assignment".to_string(),
        ));
    }
    Ok(Revision {
        revision,
        down_revisions: values.remove("down_revision").unwrap_or_default(),
        branch_labels: values.remove("branch_labels").unwrap_or_default(),
        depends_on: values.remove("depends_on").unwrap_or_default(),
    })
}

/// The source's lines that are code: outside triple-quoted strings, comments cut.
fn code_lines(source: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut open: Option<&str> = None;
    for line in source.lines() {
        let mut rest = line;
        let mut code_start = if open.is_some() { None } else { Some(0) };
        // Track triple quotes opening and closing on this line.
        loop {
            match open {
                Some(quote) => match rest.find(quote) {
                    Some(at) => {
                        rest = &rest[at + 3..];
                        open = None;
                        code_start = None;
                    }
                    None => break,
                },
                None => {
                    let next = ["\"\"\"", "'''"]
                        .iter()
                        .filter_map(|q| rest.find(q).map(|at| (at, *q)))
                        .min();
                    match next {
                        Some((at, quote)) => {
                            rest = &rest[at + 3..];
                            open = Some(quote);
                        }
                        None => break,
                    }
                }
            }
        }
        if code_start.is_some() && open.is_none() {
            lines.push(strip_comment(line));
        }
    }
    lines
}

/// `line` without a `#` comment (a `#` inside a string literal is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..at],
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// `name[: annotation] = value` at column 0, for the four names that matter.
fn assignment(line: &str) -> Option<(&'static str, &str)> {
    for name in ["revision", "down_revision", "branch_labels", "depends_on"] {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix(':') {
            // An annotation runs to the first `=` outside brackets.
            Some(annotated) => {
                let mut depth = 0i32;
                let at = annotated.char_indices().find_map(|(at, c)| {
                    match c {
                        '[' | '(' => depth += 1,
                        ']' | ')' => depth -= 1,
                        '=' if depth == 0 => return Some(at),
                        _ => {}
                    }
                    None
                })?;
                &annotated[at..]
            }
            None => rest,
        };
        let value = rest.strip_prefix('=')?;
        if value.starts_with('=') {
            return None;
        }
        return Some((name, value));
    }
    None
}

/// Whether brackets are closed (outside string literals).
fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// `None`, `"a"`, `("a", "b")`, `["a"]`, `("a",)`: the strings.
fn parse_value(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    if text == "None" {
        return Ok(Vec::new());
    }
    let inner = match (text.chars().next(), text.chars().last()) {
        (Some('('), Some(')')) | (Some('['), Some(']')) => &text[1..text.len() - 1],
        _ => text,
    };
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (literal, after) = string_literal(rest)?;
        out.push(literal);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(format!("expected `,` before {rest:?}")),
        }
    }
    Ok(out)
}

/// A string literal at the start of `text` (optional `r`/`u` prefix) and what follows it.
fn string_literal(text: &str) -> Result<(String, &str), String> {
    let text = text
        .strip_prefix(['r', 'R', 'u', 'U'])
        .filter(|t| t.starts_with(['\'', '"']))
        .unwrap_or(text);
    let Some(quote) = text.chars().next().filter(|c| matches!(c, '\'' | '"')) else {
        return Err("expected None, a string, or a tuple or list of strings".to_string());
    };
    let body = &text[1..];
    let end = body
        .find(quote)
        .ok_or_else(|| "a string that never ends".to_string())?;
    Ok((body[..end].to_string(), &body[end + 1..]))
}

/// The revisions of a project, by id.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    revisions: BTreeMap<String, Revision>,
}

impl Graph {
    /// Builds the graph; duplicate ids and links to unknown revisions are errors.
    pub fn new(revisions: Vec<(String, Revision)>) -> Result<Graph, Vec<String>> {
        let mut problems = Vec::new();
        let mut by_id: BTreeMap<String, Revision> = BTreeMap::new();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for (file, revision) in revisions {
            if let Some(first) = files.get(&revision.revision) {
                problems.push(format!(
                    "revision {} is defined twice: {first} and {file}",
                    revision.revision
                ));
                continue;
            }
            files.insert(revision.revision.clone(), file);
            by_id.insert(revision.revision.clone(), revision);
        }
        for (id, revision) in &by_id {
            for link in revision.down_revisions.iter().chain(&revision.depends_on) {
                if !by_id.contains_key(link)
                    && !by_id.values().any(|r| r.branch_labels.contains(link))
                {
                    problems.push(format!(
                        "{}: revision {id} points to {link}, which no revision file defines",
                        files.get(id).map(String::as_str).unwrap_or("?")
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Graph { revisions: by_id })
        } else {
            Err(problems)
        }
    }

    /// The heads: revisions no other revision names as its `down_revision`.
    pub fn heads(&self) -> BTreeSet<String> {
        let parents: BTreeSet<&String> = self
            .revisions
            .values()
            .flat_map(|r| &r.down_revisions)
            .collect();
        self.revisions
            .keys()
            .filter(|id| !parents.contains(id))
            .cloned()
            .collect()
    }

    /// `id` and every revision it needs (down revisions and dependencies, transitively).
    fn ancestry(&self, id: &str, into: &mut BTreeSet<String>) {
        let mut stack = vec![id.to_string()];
        while let Some(id) = stack.pop() {
            // A branch label names the revision that declares it (as in Alembic's revision
            // map); only real revisions are counted.
            let Some(id) = self.resolve(&id) else {
                continue;
            };
            if !into.insert(id.clone()) {
                continue;
            }
            if let Some(revision) = self.revisions.get(&id) {
                stack.extend(revision.down_revisions.iter().cloned());
                stack.extend(revision.depends_on.iter().cloned());
            }
        }
    }

    /// A revision id, or the id of the revision that declares the branch label `name`.
    fn resolve(&self, name: &str) -> Option<String> {
        if self.revisions.contains_key(name) {
            return Some(name.to_string());
        }
        self.revisions
            .values()
            .find(|r| r.branch_labels.iter().any(|l| l == name))
            .map(|r| r.revision.clone())
    }

    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }
}

/// The project against the version table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub heads: BTreeSet<String>,
    /// The version table's rows.
    pub current: BTreeSet<String>,
    /// Revisions not yet applied.
    pub pending: usize,
    /// Database revisions no file defines.
    pub future: BTreeSet<String>,
}

impl Comparison {
    /// Nothing to run: the version table holds exactly the heads (future revisions aside).
    pub fn up_to_date(&self) -> bool {
        self.pending == 0
    }
}

/// Compares the graph with the version table's rows.
pub fn compare(graph: &Graph, rows: &[String]) -> Comparison {
    let current: BTreeSet<String> = rows.iter().cloned().collect();
    let future: BTreeSet<String> = current
        .iter()
        .filter(|r| !graph.revisions.contains_key(*r))
        .cloned()
        .collect();
    let mut applied = BTreeSet::new();
    for row in current.difference(&future) {
        graph.ancestry(row, &mut applied);
    }
    Comparison {
        heads: graph.heads(),
        pending: graph.len() - applied.len().min(graph.len()),
        current,
        future,
    }
}

/// What `alembic … upgrade TARGET` asks for, read from the migrate command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `upgrade head`: only valid with one head.
    Head,
    /// `upgrade heads`, `label@head`, a revision: fine with several heads.
    Other(String),
    /// Not an `alembic upgrade` command (or no target found).
    Unknown,
}

impl Target {
    /// Whether the upgrade goes to every head (`head`, `heads`), or is assumed to (a command
    /// startgate cannot read, such as a script): the version table must then hold the heads.
    pub fn upgrades_to_heads(&self) -> bool {
        match self {
            Target::Head | Target::Unknown => true,
            Target::Other(target) => target == "heads",
        }
    }
}

/// The target of an `alembic upgrade` in `command` (`alembic -c alembic.ini upgrade head`).
pub fn upgrade_target(command: &str) -> Target {
    let words: Vec<&str> = command.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "upgrade") else {
        return Target::Unknown;
    };
    let mut rest = words[at + 1..].iter();
    while let Some(word) = rest.next() {
        match *word {
            // Options of `upgrade` that take a value.
            "-x" | "--tag" => {
                rest.next();
            }
            w if w.starts_with('-') => {}
            w => {
                let w = w.trim_matches(['\'', '"', ';']);
                return if w == "head" {
                    Target::Head
                } else {
                    Target::Other(w.to_string())
                };
            }
        }
    }
    Target::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revision file as `alembic revision` writes it (1.13 template, annotations).
    const ANNOTATED: &str = r#""""add feature flags

Revision ID: 3f2a9c1d7e10
Revises: 1975ea83b712
Create Date: 2026-10-02 09:12:44.123456

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '3f2a9c1d7e10'
down_revision: Union[str, None] = '1975ea83b712'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('feature_flags', sa.Column('name', sa.String(), primary_key=True))
    revision = "not this one"
"#;

    /// An older template: no annotations, a merge with a tuple over lines, a branch label.
    const MERGE: &str = r#""""merge heads

Revision ID: ae10
revision = 'wrong'
"""
revision = "ae10"  # the merge
down_revision = (
    "1975ea83b712",
    '3f2a9c1d7e10',
)
branch_labels = ('core',)
depends_on = ["0a1b"]
"#;

    #[test]
    fn parses_revision_files() {
        assert_eq!(
            parse_revision("versions/3f2a.py", ANNOTATED),
            Ok(Revision {
                revision: "3f2a9c1d7e10".to_string(),
                down_revisions: vec!["1975ea83b712".to_string()],
                branch_labels: vec![],
                depends_on: vec![],
            })
        );
        assert_eq!(
            parse_revision("versions/ae10.py", MERGE),
            Ok(Revision {
                revision: "ae10".to_string(),
                down_revisions: vec!["1975ea83b712".to_string(), "3f2a9c1d7e10".to_string()],
                branch_labels: vec!["core".to_string()],
                depends_on: vec!["0a1b".to_string()],
            })
        );
        let first = "revision = 'base1'\ndown_revision = None\n";
        assert_eq!(
            parse_revision("a.py", first).map(|r| r.down_revisions),
            Ok(vec![])
        );
    }

    #[test]
    fn refuses_what_it_cannot_read_naming_file_and_variable() {
        for (source, problem) in [
            (
                "down_revision = None\n",
                "a.py: no module-level `revision = \"…\"` assignment",
            ),
            (
                "revision = 'x'\n",
                "a.py: no module-level `down_revision = …` assignment",
            ),
            (
                "revision = 'x'\ndown_revision = compute()\n",
                "a.py: down_revision = compute(): expected None, a string, or a tuple or list of strings",
            ),
            (
                "revision = ('x', 'y')\ndown_revision = None\n",
                "a.py: revision must be one string",
            ),
        ] {
            assert_eq!(
                parse_revision("a.py", source).map_err(|e| e.to_string()),
                Err(problem.to_string()),
                "{source}"
            );
        }
    }

    fn rev(id: &str, down: &[&str]) -> (String, Revision) {
        (
            format!("{id}.py"),
            Revision {
                revision: id.to_string(),
                down_revisions: down.iter().map(ToString::to_string).collect(),
                branch_labels: vec![],
                depends_on: vec![],
            },
        )
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn heads_pending_and_future() {
        // a <- b <- c, b <- d (two heads), then m merges c and d.
        let branched = Graph::new(vec![
            rev("a", &[]),
            rev("b", &["a"]),
            rev("c", &["b"]),
            rev("d", &["b"]),
        ])
        .expect("graph");
        assert_eq!(branched.heads(), set(&["c", "d"]));
        let merged = Graph::new(vec![
            rev("a", &[]),
            rev("b", &["a"]),
            rev("c", &["b"]),
            rev("d", &["b"]),
            rev("m", &["c", "d"]),
        ])
        .expect("graph");
        assert_eq!(merged.heads(), set(&["m"]));
        let rows = |ids: &[&str]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
        for (graph, db, pending, future) in [
            (&merged, rows(&[]), 5, set(&[])),
            (&merged, rows(&["b"]), 3, set(&[])),
            (&merged, rows(&["c", "d"]), 1, set(&[])),
            (&merged, rows(&["m"]), 0, set(&[])),
            (&merged, rows(&["m", "zz9"]), 0, set(&["zz9"])),
            (&branched, rows(&["c"]), 1, set(&[])),
            (&branched, rows(&["c", "d"]), 0, set(&[])),
        ] {
            let comparison = compare(graph, &db);
            assert_eq!(comparison.pending, pending, "{db:?}");
            assert_eq!(comparison.future, future, "{db:?}");
            assert_eq!(comparison.up_to_date(), pending == 0);
        }
    }

    #[test]
    fn a_dependency_on_a_branch_label_counts_the_labelled_revision_only() {
        // a1 (label `core`) <- a2; x1 <- x2, which depends on `core`.
        let mut a1 = rev("a1", &[]);
        a1.1.branch_labels = vec!["core".to_string()];
        let mut x2 = rev("x2", &["x1"]);
        x2.1.depends_on = vec!["core".to_string()];
        let graph = Graph::new(vec![a1, rev("a2", &["a1"]), rev("x1", &[]), x2]).expect("graph");
        assert_eq!(graph.heads(), set(&["a2", "x2"]));
        let rows = ["a1".to_string(), "x2".to_string()];
        let comparison = compare(&graph, &rows);
        // a1, x1, x2 are applied; a2 is not, and the label is no revision.
        assert_eq!(comparison.pending, 1);
        assert!(!comparison.up_to_date());
    }

    #[test]
    fn graph_problems_are_all_named() {
        let problems = Graph::new(vec![
            rev("a", &[]),
            ("again.py".to_string(), rev("a", &[]).1),
            rev("b", &["nope"]),
        ])
        .expect_err("problems");
        assert_eq!(
            problems,
            vec![
                "revision a is defined twice: a.py and again.py".to_string(),
                "b.py: revision b points to nope, which no revision file defines".to_string(),
            ]
        );
    }

    #[test]
    fn reads_the_upgrade_target() {
        for (command, target) in [
            ("alembic upgrade head", Target::Head),
            ("alembic -c deploy/alembic.ini upgrade head", Target::Head),
            ("alembic upgrade -x tenant=a head", Target::Head),
            ("alembic upgrade heads", Target::Other("heads".to_string())),
            (
                "alembic upgrade core@head",
                Target::Other("core@head".to_string()),
            ),
            (
                "python -m alembic upgrade 'ae10'",
                Target::Other("ae10".to_string()),
            ),
            ("alembic upgrade \"head\"", Target::Head),
            ("alembic upgrade head;", Target::Head),
            ("alembic current", Target::Unknown),
            ("python manage.py migrate", Target::Unknown),
        ] {
            assert_eq!(upgrade_target(command), target, "{command}");
        }
    }
}
