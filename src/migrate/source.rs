//! Migration files on disk: which files are migrations, and what each one applies.
//!
//! The core is pure: [`classify`] reads a file name, [`parse_file`] turns a file's bytes into a
//! [`Migration`] or into every problem found in it, each with the path and, where there is one,
//! the line. [`load_dir`] is the thin I/O shell around them: it reads the directory (not its
//! subdirectories), reads every migration file, checks that no two files share a version, and
//! reports every problem of every file at once, so that an operator fixes a broken deploy in one
//! round trip instead of one error per restart.
//!
//! What a file may contain is DESIGN.md's "Migration files": plain SQL, or dbmate's
//! `-- migrate:up` / `-- migrate:down` sections (only the up section is applied), with
//! `-- startgate:` directives in the leading comment lines. Statements come from
//! [`split`](super::split), which knows PostgreSQL's lexical rules; this module only looks at the
//! first keywords of each statement, to refuse what cannot work inside the migration's
//! transaction at parse time rather than half-way through a deploy.
//!
//! Lines are counted the way editors count them: `\n`, `\r\n` and a lone `\r` each end a line.
//! Every line number and byte offset refers to the whole file, also for a dbmate file's up
//! section, and byte offsets count a UTF-8 byte order mark although the text starts after it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::split;
use super::{Migration, MigrationOptions, Statement, Version};
use crate::duration::parse_duration;

/// The file-name forms, for messages about a name that is none of them.
const NAME_FORMS: &str = "<version>_<name>.sql, <version>_<name>.up.sql or V<version>__<name>.sql";

/// The directives, for the message about an unknown one.
const KNOWN_DIRECTIVES: &str = "no-transaction, lock-timeout <duration>, \
     statement-timeout <duration>, timeout <duration>";

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a file name says about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// An up migration: `<version>_<name>.sql`, `<version>_<name>.up.sql` or
    /// `V<version>__<name>.sql`.
    Up { version: Version, name: String },
    /// A `*.down.sql` file: never applied, ignored without a word.
    Down,
    /// Anything else. `warn` is set for a `*.sql` file, which was probably meant to be a
    /// migration; other files (READMEs, hidden files, editor backups) are ignored silently.
    Ignored { warn: bool },
}

/// One problem in one migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file, as found in the configured directory (`migrations/0003_x.sql`).
    pub path: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<u32>,
    /// A lowercase fragment that names the problem and, when we know it, what to do.
    pub message: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Why the migrations could not be loaded (exit 2: unreadable or malformed migration files).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("migrations directory {} does not exist{hint}", path.display())]
    MissingDir {
        path: PathBuf,
        /// Where a relative path was looked for and which setting names it, so that an operator
        /// in a container sees at once which working directory was used.
        hint: String,
    },
    #[error("migrations directory {} is not a directory", path.display())]
    NotADir { path: PathBuf },
    #[error("cannot read migrations directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every problem of every file, so that one run shows them all.
    #[error("{}", format_problems(.0))]
    Problems(Vec<FileProblem>),
}

fn format_problems(problems: &[FileProblem]) -> String {
    let mut out = match problems.len() {
        1 => "1 problem in migration files:".to_string(),
        n => format!("{n} problems in migration files:"),
    };
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(&problem.to_string());
    }
    out
}

/// The migrations of a directory, and what was ignored with a warning.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Sorted by version; no two share one.
    pub migrations: Vec<Migration>,
    /// One line per ignored `*.sql` file or subdirectory, naming its path and why, and one for
    /// a directory without any migration file (a wrong mount is a common mistake); the caller
    /// logs them.
    pub warnings: Vec<String>,
}

/// Says what a file name is. Pure; `file_name` is the bare name, without a directory.
pub fn classify(file_name: &str) -> FileKind {
    if file_name.starts_with('.') {
        return FileKind::Ignored { warn: false };
    }
    let Some(stem) = file_name.strip_suffix(".sql") else {
        // `0001_x.SQL` was surely meant as a migration: say why it is not one.
        let warn = ends_with_ignore_case(file_name, ".sql");
        return FileKind::Ignored { warn };
    };
    if ends_with_ignore_case(stem, ".down") {
        return FileKind::Down;
    }
    let stem = if ends_with_ignore_case(stem, ".up") {
        &stem[..stem.len() - 3]
    } else {
        stem
    };
    match up_name(stem) {
        Some((version, name)) => FileKind::Up { version, name },
        None => FileKind::Ignored { warn: true },
    }
}

/// Splits `<version>_<name>` or Flyway's `V<version>__<name>` into its parts.
fn up_name(stem: &str) -> Option<(Version, String)> {
    // Flyway first: `V1__x` would otherwise not parse, and `V1_1__x` writes version 1.1 with an
    // underscore for the dot. The version is kept dotted, as Flyway displays it.
    if let Some((version, name)) = stem.strip_prefix('V').and_then(|s| s.split_once("__")) {
        let version = Version::parse(&version.replace('_', "."))?;
        return (!name.is_empty()).then(|| (version, name.to_string()));
    }
    let (version, name) = stem.split_once('_')?;
    let version = Version::parse(version)?;
    (!name.is_empty()).then(|| (version, name.to_string()))
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text
            .get(text.len() - suffix.len()..)
            .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
}

/// Why a `*.sql` file that [`classify`] ignored is not a migration, for its warning.
fn ignored_reason(file_name: &str) -> String {
    if !file_name.ends_with(".sql") {
        "not a migration: the extension must be .sql, in lowercase".to_string()
    } else if file_name.starts_with("R__") {
        "Flyway repeatable migrations (R__) are not supported".to_string()
    } else {
        format!("not a migration file name (expected {NAME_FORMS})")
    }
}

/// One line of the file, without its terminator.
struct Line<'a> {
    /// Byte offset of the line's first byte.
    start: usize,
    text: &'a str,
    /// Whether a line break (`\n`, `\r\n` or `\r`) ends it; only the last line can lack one.
    terminated: bool,
}

/// Splits `text` into lines, treating `\n`, `\r\n` and a lone `\r` as line breaks.
fn lines(text: &str) -> Vec<Line<'_>> {
    let bytes = text.as_bytes();
    // A rough guess of the line count saves most reallocations on a typical file.
    let mut out = Vec::with_capacity(bytes.len() / 40 + 1);
    let mut start = 0;
    for end in memchr::memchr2_iter(b'\n', b'\r', bytes) {
        if end < start {
            // The `\n` of a `\r\n` pair, already consumed with its `\r`.
            continue;
        }
        let next = if bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n') {
            end + 2
        } else {
            end + 1
        };
        out.push(Line {
            start,
            text: &text[start..end],
            terminated: true,
        });
        start = next;
    }
    if start < bytes.len() {
        out.push(Line {
            start,
            text: &text[start..],
            terminated: false,
        });
    }
    out
}

/// The 1-based line that holds byte `offset`.
fn line_of(lines: &[Line<'_>], offset: usize) -> u32 {
    lines.partition_point(|line| line.start <= offset).max(1) as u32
}

/// Whether the line is a `--` comment once its indentation is trimmed: the lines the marker
/// and directive readers look at.
fn is_comment_line(line: &str) -> bool {
    trim_start(line).starts_with("--")
}

/// `str::trim_start`, with the common cases (no indentation, ASCII indentation) done byte by
/// byte: on a start, what precedes each `--` of every file goes through here.
fn trim_start(line: &str) -> &str {
    match line.as_bytes().first() {
        // Most lines start with their text: nothing to trim.
        Some(b) if b.is_ascii() && !is_ascii_blank(*b) => return line,
        None => return line,
        _ => {}
    }
    let indent = line.bytes().take_while(|b| is_ascii_blank(*b)).count();
    let rest = &line[indent..];
    match rest.as_bytes().first() {
        // Unicode whitespace (a no-break space, say) is trimmed as `str::trim_start` does.
        Some(b) if !b.is_ascii() => rest.trim_start(),
        _ => rest,
    }
}

/// The ASCII characters `str::trim_start` trims.
fn is_ascii_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// The text after `startgate:` when `line` is a `-- startgate:` directive line. The prefix is
/// matched without regard to case, so that `-- StartGate:…` is never silently ignored.
fn directive_body(line: &str) -> Option<&str> {
    let rest = trim_start(trim_start(line).strip_prefix("--")?);
    let prefix = rest.get(..10)?;
    prefix
        .eq_ignore_ascii_case("startgate:")
        .then(|| &rest[10..])
}

/// A dbmate section marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Up,
    Down,
}

/// What a `-- migrate:` line is.
enum MarkerLine<'a> {
    /// `-- migrate:up` or `-- migrate:down`, with the options after it.
    Marker(Marker, &'a str),
    /// `-- migrate:` followed by something dbmate does not know (`-- migrate:upp`,
    /// `-- Migrate:Up`): a typo that would otherwise apply the down section too.
    Unknown(&'a str),
}

/// Reads a dbmate marker line: `--`, optional whitespace, `migrate:up` or `migrate:down`, then
/// the end of the line or whitespace and options, as dbmate's own pattern has it.
fn marker_line(line: &str) -> Option<MarkerLine<'_>> {
    let rest = trim_start(trim_start(line).strip_prefix("--")?);
    let prefix = rest.get(..8)?;
    if !prefix.eq_ignore_ascii_case("migrate:") {
        return None;
    }
    let after = &rest[8..];
    for (word, marker) in [("up", Marker::Up), ("down", Marker::Down)] {
        if let Some(options) = after.strip_prefix(word)
            && (options.is_empty() || options.starts_with(char::is_whitespace))
            && prefix == "migrate:"
        {
            return Some(MarkerLine::Marker(marker, options.trim()));
        }
    }
    // `-- migrate: moves rows to the new table` is prose, not a marker.
    after
        .starts_with(|c: char| c.is_ascii_alphanumeric())
        .then(|| MarkerLine::Unknown(rest.split_whitespace().next().unwrap_or(rest)))
}

/// A line whose first non-blank characters are `--`: the only lines where dbmate markers and
/// startgate directives can be.
struct CommentLine<'a> {
    /// 0-based line index, for problems.
    index: usize,
    /// Byte offset of the line's first byte.
    start: usize,
    /// Byte offset of the next line's first byte (the text's length for the last line).
    next: usize,
    /// The line without its line break.
    text: &'a str,
}

/// What reading a file's markers and directives needs of its lines: its comment lines, and
/// where its leading comment lines end.
struct Outline<'a> {
    comments: Vec<CommentLine<'a>>,
    /// Byte offset of the first line that is neither blank nor a comment (the text's length
    /// when there is none).
    leading_end: usize,
}

impl<'a> Outline<'a> {
    /// From the lines of any text (`\n`, `\r\n` and lone `\r` line breaks alike).
    fn of_lines(lines: &[Line<'a>], text_len: usize) -> Outline<'a> {
        let next = |index: usize| lines.get(index + 1).map_or(text_len, |line| line.start);
        Outline {
            comments: lines
                .iter()
                .enumerate()
                .filter(|(_, line)| is_comment_line(line.text))
                .map(|(index, line)| CommentLine {
                    index,
                    start: line.start,
                    next: next(index),
                    text: line.text,
                })
                .collect(),
            leading_end: lines
                .iter()
                .find(|line| !(is_blank(line.text) || is_comment_line(line.text)))
                .map_or(text_len, |line| line.start),
        }
    }

    /// The same as [`Outline::of_lines`] for a text without `\r` (so `\n` is its only line
    /// break), without visiting every line: a comment line holds `--`, so only the lines
    /// around each `--` are looked at, and the leading lines (a typical migration has a few
    /// comments and many lines of SQL). Every start reads every such migration file this way.
    fn of_lf_text(text: &'a str) -> Outline<'a> {
        debug_assert!(memchr::memchr(b'\r', text.as_bytes()).is_none());
        let bytes = text.as_bytes();
        let line_end =
            |from: usize| memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |i| from + i);
        let mut comments = Vec::new();
        // Lines before `counted` are counted in `index`.
        let (mut index, mut counted) = (0, 0);
        // The start of the line after the last one looked at.
        let mut from = 0;
        for at in memchr::memmem::find_iter(bytes, b"--") {
            if at < from {
                // Another `--` on a line already looked at changes nothing.
                continue;
            }
            let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
            let end = line_end(at);
            let next = (end + 1).min(bytes.len());
            if trim_start(&text[start..at]).is_empty() {
                index += memchr::memchr_iter(b'\n', &bytes[counted..start]).count();
                counted = start;
                comments.push(CommentLine {
                    index,
                    start,
                    next,
                    text: &text[start..end],
                });
            }
            from = next;
        }
        // The leading lines: comments (skipped whole) and blank lines, up to the first other.
        let mut pos = 0;
        let mut upcoming = comments.iter().peekable();
        let leading_end = loop {
            if pos >= bytes.len() {
                break bytes.len();
            }
            if let Some(comment) = upcoming.next_if(|c| c.start == pos) {
                pos = comment.next;
                continue;
            }
            let end = line_end(pos);
            if !is_blank(&text[pos..end]) {
                break pos;
            }
            pos = end + 1;
        };
        Outline {
            comments,
            leading_end,
        }
    }
}

/// Where the applied text lies, as found from dbmate markers (or their absence).
struct Layout {
    /// Byte range of the applied text: the whole file, or a dbmate up section. `None` when
    /// the markers are broken (a problem says how), so nothing can be applied.
    applied: Option<Range<usize>>,
    /// The `-- migrate:up` marker's line index and first byte, for a dbmate file.
    up_marker: Option<(usize, usize)>,
    /// The `-- migrate:down` marker's line index and first byte; the leading comment lines
    /// stop there.
    down_marker: Option<(usize, usize)>,
    /// `-- migrate:up transaction:false`.
    no_transaction: bool,
}

/// The problems of one file, each with a 1-based line or none, turned into [`FileProblem`]s
/// once the file is done.
#[derive(Default)]
struct Problems(Vec<(Option<u32>, String)>);

impl Problems {
    /// A problem on the line with 0-based `index`.
    fn at_index(&mut self, index: usize, message: String) {
        self.at_line(Some(index as u32 + 1), message);
    }

    fn at_line(&mut self, line: Option<u32>, message: String) {
        self.0.push((line, message));
    }

    /// In line order, problems of the whole file first.
    fn into_file_problems(mut self, path: &Path) -> Vec<FileProblem> {
        self.0.sort_by_key(|(line, _)| line.unwrap_or(0));
        self.0
            .into_iter()
            .map(|(line, message)| FileProblem {
                path: path.to_path_buf(),
                line,
                message,
            })
            .collect()
    }
}

/// Reads the dbmate markers among the comment lines: where the applied text lies.
fn find_layout(comments: &[CommentLine<'_>], text_len: usize, problems: &mut Problems) -> Layout {
    let mut up: Option<&CommentLine<'_>> = None;
    let mut down: Option<&CommentLine<'_>> = None;
    let mut no_transaction = false;
    for line in comments {
        let index = line.index;
        match marker_line(line.text) {
            None => {}
            Some(MarkerLine::Unknown(word)) => problems.at_index(
                index,
                format!(
                    "unknown dbmate marker {word:?} (dbmate knows -- migrate:up and \
                     -- migrate:down, in lowercase)"
                ),
            ),
            Some(MarkerLine::Marker(marker, options)) => {
                let (seen, what) = match marker {
                    Marker::Up => (&mut up, "up"),
                    Marker::Down => (&mut down, "down"),
                };
                if let Some(first) = *seen {
                    problems.at_index(
                        index,
                        format!(
                            "second -- migrate:{what} marker (the first is on line {}); a file \
                             has one up section and at most one down section",
                            first.index + 1
                        ),
                    );
                    continue;
                }
                *seen = Some(line);
                if marker == Marker::Down {
                    // The down section is never applied, so its options do not matter.
                    continue;
                }
                for option in options.split_whitespace() {
                    match option {
                        "transaction:false" => no_transaction = true,
                        "transaction:true" => {}
                        other => problems.at_index(
                            index,
                            format!(
                                "unknown option {other:?} on -- migrate:up (dbmate knows \
                                 transaction:false)"
                            ),
                        ),
                    }
                }
            }
        }
    }
    let applied = match (up, down) {
        (None, None) => Some(0..text_len),
        (None, Some(down)) => {
            problems.at_index(
                down.index,
                "-- migrate:down without -- migrate:up: add a -- migrate:up line above the \
                 statements to apply"
                    .to_string(),
            );
            None
        }
        (Some(up), Some(down)) if down.index < up.index => {
            problems.at_index(
                down.index,
                format!(
                    "-- migrate:down comes before -- migrate:up (line {}); the up section \
                     must come first",
                    up.index + 1
                ),
            );
            None
        }
        (Some(up), down) => Some(up.next..down.map_or(text_len, |down| down.start)),
    };
    Layout {
        applied,
        up_marker: up.map(|line| (line.index, line.start)),
        down_marker: down.map(|line| (line.index, line.start)),
        no_transaction,
    }
}

/// A `-- startgate:` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    NoTransaction,
    LockTimeout,
    StatementTimeout,
    Timeout,
}

impl Directive {
    fn parse(name: &str) -> Option<Directive> {
        match name {
            "no-transaction" => Some(Directive::NoTransaction),
            "lock-timeout" => Some(Directive::LockTimeout),
            "statement-timeout" => Some(Directive::StatementTimeout),
            "timeout" => Some(Directive::Timeout),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Directive::NoTransaction => "no-transaction",
            Directive::LockTimeout => "lock-timeout",
            Directive::StatementTimeout => "statement-timeout",
            Directive::Timeout => "timeout",
        }
    }
}

/// Applies one directive line to `options`; returns the problem with it, if any.
fn apply_directive(
    body: &str,
    options: &mut MigrationOptions,
    seen: &mut BTreeMap<&'static str, usize>,
    index: usize,
) -> Result<(), String> {
    let body = body.trim();
    let (name, value) = match body.split_once(char::is_whitespace) {
        Some((name, value)) => (name, value.trim()),
        None => (body, ""),
    };
    let directive = Directive::parse(name)
        .ok_or_else(|| format!("unknown directive startgate:{name} (known: {KNOWN_DIRECTIVES})"))?;
    let name = directive.name();
    if let Some(first) = seen.insert(name, index) {
        seen.insert(name, first);
        return Err(format!(
            "startgate:{name} appears twice (first on line {}); keep one",
            first + 1
        ));
    }
    let slot: &mut Option<Duration> = match directive {
        Directive::NoTransaction => {
            if !value.is_empty() {
                return Err(format!(
                    "startgate:no-transaction takes no value (found {value:?})"
                ));
            }
            options.no_transaction = true;
            return Ok(());
        }
        Directive::LockTimeout => &mut options.lock_timeout,
        Directive::StatementTimeout => &mut options.statement_timeout,
        Directive::Timeout => &mut options.timeout,
    };
    if value.is_empty() {
        return Err(format!(
            "startgate:{name} needs a duration (e.g. -- startgate:{name} 2s)"
        ));
    }
    let duration = parse_duration(value)
        .map_err(|err| format!("bad duration {value:?} for startgate:{name}: {err}"))?;
    // The same bounds as the settings these directives override.
    match directive {
        Directive::LockTimeout | Directive::StatementTimeout if duration > MAX_SERVER_TIMEOUT => {
            return Err(format!(
                "startgate:{name} {value} is more than PostgreSQL accepts (at most {})",
                crate::duration::HumanDuration(MAX_SERVER_TIMEOUT)
            ));
        }
        Directive::Timeout if duration.is_zero() => {
            return Err(format!(
                "startgate:{name} must be more than 0 (it is a wall-clock limit)"
            ));
        }
        _ => {}
    }
    *slot = Some(duration);
    Ok(())
}

/// PostgreSQL's largest `lock_timeout` and `statement_timeout`: 2^31 - 1 milliseconds.
const MAX_SERVER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Why a statement cannot run in a transactional migration.
struct Refusal {
    /// The statement's kind, as an operator would write it (`CREATE INDEX CONCURRENTLY`).
    what: String,
    /// Transaction control, as opposed to a statement PostgreSQL refuses in a transaction block.
    control: bool,
}

impl Refusal {
    fn message(&self) -> String {
        if self.control {
            format!(
                "{} is transaction control; each migration already runs in its own transaction \
                 (use -- startgate:no-transaction to manage transactions yourself)",
                self.what
            )
        } else {
            format!(
                "{} cannot run inside a transaction, and this migration runs in one (add \
                 -- startgate:no-transaction to the file's leading comment lines)",
                self.what
            )
        }
    }
}

/// Recognises transaction control, and the statements PostgreSQL refuses inside a transaction
/// block (it would refuse them at apply time, after earlier migrations of the deploy are
/// committed). Looks only at the leading keywords, so a `BEGIN` inside a `DO` body or a
/// `BEGIN ATOMIC` function body (never a statement's first keyword) is no concern.
fn refusal(sql: &str) -> Option<Refusal> {
    let keywords = split::leading_keywords(sql, 4);
    let keywords: Vec<&str> = keywords.iter().map(String::as_str).collect();
    let control = |what: &str| {
        Some(Refusal {
            what: what.to_string(),
            control: true,
        })
    };
    let outside = |what: &str| {
        Some(Refusal {
            what: what.to_string(),
            control: false,
        })
    };
    match keywords.as_slice() {
        ["begin", "atomic", ..] => None,
        ["begin", ..] => control("BEGIN"),
        ["start", "transaction", ..] => control("START TRANSACTION"),
        ["commit", "prepared", ..] => control("COMMIT PREPARED"),
        ["commit", ..] => control("COMMIT"),
        ["end", ..] => control("END"),
        // `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] x` stays inside the transaction.
        ["rollback", "to", ..] | ["rollback", "work" | "transaction", "to", ..] => None,
        ["rollback", "prepared", ..] => control("ROLLBACK PREPARED"),
        ["rollback", ..] => control("ROLLBACK"),
        ["abort", ..] => control("ABORT"),
        ["prepare", "transaction", ..] => control("PREPARE TRANSACTION"),
        ["create", "index", "concurrently", ..] | ["create", "unique", "index", "concurrently"] => {
            outside("CREATE INDEX CONCURRENTLY")
        }
        ["drop", "index", "concurrently", ..] => outside("DROP INDEX CONCURRENTLY"),
        ["reindex", ..] => reindex_refusal(sql).and_then(|what| outside(&what)),
        ["vacuum", ..] => outside("VACUUM"),
        ["create", "database", ..] => outside("CREATE DATABASE"),
        ["drop", "database", ..] => outside("DROP DATABASE"),
        ["create", "tablespace", ..] => outside("CREATE TABLESPACE"),
        ["drop", "tablespace", ..] => outside("DROP TABLESPACE"),
        ["alter", "system", ..] => outside("ALTER SYSTEM"),
        _ => None,
    }
}

/// `REINDEX [(options)] {INDEX | TABLE | SCHEMA | DATABASE | SYSTEM} [CONCURRENTLY] name`:
/// refused in a transaction block with `CONCURRENTLY` (as a keyword or, since PostgreSQL 14, an
/// option) and for `SCHEMA`, `DATABASE` and `SYSTEM`.
fn reindex_refusal(sql: &str) -> Option<String> {
    // The statement starts at its first token, which the caller saw is `reindex`.
    let rest = sql.get(7..)?.trim_start();
    let (options, rest) = match rest.strip_prefix('(') {
        Some(inner) => inner.split_once(')').unwrap_or((inner, "")),
        None => ("", rest),
    };
    let keywords = split::leading_keywords(rest, 2);
    let target = keywords.first().map(|k| k.to_ascii_uppercase())?;
    let concurrently = keywords.get(1).is_some_and(|k| k == "concurrently")
        || options
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|word| word.eq_ignore_ascii_case("concurrently"));
    if concurrently {
        Some(format!("REINDEX {target} CONCURRENTLY"))
    } else if matches!(target.as_str(), "SCHEMA" | "DATABASE" | "SYSTEM") {
        Some(format!("REINDEX {target}"))
    } else {
        None
    }
}

/// The message and line for bytes that are not UTF-8.
fn utf8_problem(bytes: &[u8], error: std::str::Utf8Error) -> (u32, String) {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return (
            1,
            "is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8".to_string(),
        );
    }
    let valid = error.valid_up_to();
    // The prefix is valid UTF-8 by definition of `valid_up_to`.
    let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let all = lines(prefix);
    // The invalid byte is on the last line of the prefix, or on a new one after a final break.
    let line = match all.last() {
        Some(last) if !last.terminated => all.len(),
        _ => all.len() + 1,
    };
    (
        line as u32,
        format!(
            "not valid UTF-8 (byte 0x{:02x}); save the file as UTF-8",
            bytes[valid]
        ),
    )
}

/// Reads what a migration file says about itself without splitting its statements: version,
/// name, directives, checksum, and every problem that can be found without the statements
/// (name, encoding, directives, dbmate markers). Pure: `path` is used for messages and stored in
/// the migration, the version and name come from its file name, and `bytes` are the content.
///
/// This is all a start needs for a file that is already applied: its checksum. The statements
/// of the files that will run come from [`parse`] (through [`read_statements`]).
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Migration, Vec<FileProblem>> {
    parse_inner(path, bytes, false).map(|(migration, _)| migration)
}

/// Parses one migration file whole: [`parse_file`] and its statements, with the problems only
/// the statements show (unterminated text, no statement at all, transaction control in a
/// transactional file, a transaction never committed in a no-transaction file).
///
/// Returns every problem found, in line order, rather than the first.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Migration, Vec<Statement>), Vec<FileProblem>> {
    parse_inner(path, bytes, true)
}

fn parse_inner(
    path: &Path,
    bytes: &[u8],
    with_statements: bool,
) -> Result<(Migration, Vec<Statement>), Vec<FileProblem>> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let FileKind::Up { version, name } = classify(&file_name) else {
        return Err(vec![FileProblem {
            path: path.to_path_buf(),
            line: None,
            message: format!(
                "{file_name:?} is not an up migration file name (expected {NAME_FORMS})"
            ),
        }]);
    };
    let (examined, statements) = examine(path, bytes, with_statements)?;
    let up = UpName {
        version,
        name,
        file_name,
    };
    Ok((up.into_migration(path.to_path_buf(), examined), statements))
}

/// What a file's content says about its migration: the checksum and the options. The file
/// name's parts are added by whoever has them ([`parse_inner`], [`load_dir`]).
struct Examined {
    /// SHA-256 of the applied text (see [`Migration::checksum`]).
    checksum: [u8; 32],
    options: MigrationOptions,
}

/// Lowercase hex, two digits a byte, as the history table keeps checksums (and the migrate
/// command's fingerprint and run id are written): one allocation of the final size.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Reads a migration file's content (`path` only names it in problems): where the applied
/// text lies, its directives, its checksum and, with `with_statements`, its statements with
/// the problems only they show. Allocates nothing that outlives the call but the statements
/// and the problems, so that the threads reading a thousand files on every start do not
/// contend for the allocator.
fn examine(
    path: &Path,
    bytes: &[u8],
    with_statements: bool,
) -> Result<(Examined, Vec<Statement>), Vec<FileProblem>> {
    let fail = |line: Option<u32>, message: String| {
        Err(vec![FileProblem {
            path: path.to_path_buf(),
            line,
            message,
        }])
    };
    // A byte order mark is an editor's artefact, not SQL: PostgreSQL would choke on it.
    let (bom_len, bytes) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, bytes),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let (line, message) = utf8_problem(bytes, error);
            return fail(Some(line), message);
        }
    };

    // Every line is needed for the statements' line numbers, to normalise `\r` line breaks
    // and to place some problems; an applied file without `\r` read on a start needs only its
    // comment lines, so the lines are split when first asked for.
    let has_cr = memchr::memchr(b'\r', text.as_bytes()).is_some();
    let all_lines = std::cell::OnceCell::new();
    let lines = || all_lines.get_or_init(|| self::lines(text)).as_slice();
    let outline = if has_cr {
        Outline::of_lines(lines(), text.len())
    } else {
        Outline::of_lf_text(text)
    };
    let mut problems = Problems::default();
    let layout = find_layout(&outline.comments, text.len(), &mut problems);

    // The leading comment lines: up to the first line that is neither blank nor a `--`
    // comment, and never into a dbmate down section.
    let leading_end = match layout.down_marker {
        Some((_, down)) => outline.leading_end.min(down),
        None => outline.leading_end,
    };
    let mut options = MigrationOptions {
        no_transaction: layout.no_transaction,
        ..MigrationOptions::default()
    };
    let mut seen = BTreeMap::new();
    // The byte ranges of the directive lines, line breaks included.
    let mut directive_lines = Vec::new();
    for line in &outline.comments {
        let Some(body) = directive_body(line.text) else {
            continue;
        };
        let index = line.index;
        if line.start < leading_end {
            directive_lines.push(line.start..line.next);
            if let Err(message) = apply_directive(body, &mut options, &mut seen, index) {
                problems.at_index(index, message);
            }
        } else {
            // Line-based, like the directives themselves: a `-- startgate:` line inside a
            // multi-line string literal would be reported too, which is rare and harmless.
            let name = body.split_whitespace().next().unwrap_or_default();
            problems.at_index(
                index,
                format!(
                    "-- startgate:{name} has no effect here: directives belong in the file's \
                     leading comment lines"
                ),
            );
        }
    }

    // dbmate refuses SQL before the up marker; it would never run, so we refuse it too.
    if let (Some((_, up)), Some(_)) = (layout.up_marker, &layout.applied) {
        let before = split::split(&text[..up]);
        if let Some(range) = before.pieces.iter().find_map(|p| p.statement.clone()) {
            problems.at_line(
                Some(line_of(lines(), range.start)),
                "SQL before -- migrate:up is never applied; move it below the marker".to_string(),
            );
        }
    }

    let Some(applied) = layout.applied else {
        return Err(problems.into_file_problems(path));
    };

    // The checksum covers exactly what runs, with normalised line endings and without the
    // directive lines, so that converting a file to LF or tuning a timeout on an applied file
    // is not a change.
    let mut hasher = Sha256::new();
    let in_applied: Vec<&Range<usize>> = directive_lines
        .iter()
        .filter(|line| applied.contains(&line.start))
        .collect();
    if !has_cr {
        // The applied text already is its lines joined by `\n`: hash it around the
        // directive lines, if it has any.
        let mut from = applied.start;
        for line in in_applied {
            hasher.update(&text.as_bytes()[from..line.start]);
            from = line.end;
        }
        hasher.update(&text.as_bytes()[from..applied.end]);
    } else {
        for line in lines().iter().filter(|line| applied.contains(&line.start)) {
            if in_applied
                .iter()
                .any(|directive| directive.start == line.start)
            {
                continue;
            }
            hasher.update(line.text.as_bytes());
            if line.terminated {
                hasher.update(b"\n");
            }
        }
    }
    let checksum: [u8; 32] = hasher.finalize().into();
    // Called once, on whichever path returns: it moves the parts into the result.
    let no_transaction = options.no_transaction;
    let examined = move |problems: Problems| {
        if !problems.0.is_empty() {
            return Err(problems.into_file_problems(path));
        }
        Ok(Examined { checksum, options })
    };
    // A file with problems is refused anyway: then its statements are checked too, so that
    // one run reports everything wrong with it.
    if !with_statements && problems.0.is_empty() {
        return examined(problems).map(|e| (e, Vec::new()));
    }

    let lines = lines();
    let split = split::split(&text[applied.clone()]);
    let statements: Vec<Statement> = split
        .pieces
        .iter()
        .filter_map(|piece| piece.statement.clone())
        .map(|range| {
            let start = applied.start + range.start;
            let line_start = text[..start].rfind(['\n', '\r']).map_or(0, |i| i + 1);
            Statement {
                sql: text[start..applied.start + range.end].to_string(),
                line: line_of(lines, start),
                column: text[line_start..start].chars().count() as u32 + 1,
                offset: bom_len + start,
            }
        })
        .collect();
    if let Some(unterminated) = &split.unterminated {
        let end = match layout.down_marker {
            Some(_) => "-- migrate:down",
            None => "the end of the file",
        };
        // The offset, not the splitter's line: the splitter counts lines by `\n` only, this
        // file by `\n`, `\r\n` and lone `\r` alike.
        problems.at_line(
            Some(line_of(lines, applied.start + unterminated.offset)),
            format!(
                "unterminated {}: nothing closes it before {end}",
                unterminated.what
            ),
        );
    } else if statements.is_empty() {
        match layout.up_marker {
            Some((up, _)) => problems.at_index(
                up,
                "the -- migrate:up section contains no SQL statement".to_string(),
            ),
            None => problems.at_line(None, "contains no SQL statement".to_string()),
        }
    }

    if !no_transaction {
        for statement in &statements {
            if let Some(refusal) = refusal(&statement.sql) {
                problems.at_line(Some(statement.line), refusal.message());
            }
        }
    } else if let (_, Some(opener)) = super::transaction_spans(&statements)
        && let Some(statement) = statements.get(opener)
    {
        // startgate records progress between statements; a transaction left open at the end
        // would swallow that record and be rolled back when the session ends.
        problems.at_line(
            Some(statement.line),
            "this transaction is never committed: a no-transaction migration must end every \
             transaction it opens (add COMMIT)"
                .to_string(),
        );
    }

    examined(problems).map(|e| (e, statements))
}

/// Reads a loaded migration's file again and returns its statements: what `init` runs, what
/// `status` checks before it calls a file pending. Only the files that will run are split, and
/// each one just before it is needed, so a start never holds more than one file's statements.
///
/// The file must still be the one that was loaded: a different checksum means it was replaced
/// while startgate ran (a volume updated under a running pod), and nothing of it is run.
pub fn read_statements(m: &Migration) -> Result<Vec<Statement>, Vec<FileProblem>> {
    let problem = |message: String| {
        vec![FileProblem {
            path: m.path.clone(),
            line: None,
            message,
        }]
    };
    let bytes = fs::read(&m.path).map_err(|e| problem(format!("cannot read the file: {e}")))?;
    let (now, statements) = parse(&m.path, &bytes)?;
    if now.checksum != m.checksum || now.options != m.options {
        return Err(problem(format!(
            "the file changed on disk while startgate was running (checksum {} when it started, \
             {} now); nothing of it was run, start again",
            super::short_checksum(&m.checksum),
            super::short_checksum(&now.checksum)
        )));
    }
    Ok(statements)
}

/// Reads the migrations of `dir` (not its subdirectories): every file [`classify`] calls an up
/// migration is read and parsed, and every problem of every file is reported at once.
pub fn load_dir(dir: &Path) -> Result<Loaded, SourceError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(SourceError::NotADir {
                path: dir.to_path_buf(),
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::MissingDir {
                path: dir.to_path_buf(),
                hint: missing_dir_hint(dir),
            });
        }
        Err(source) => {
            return Err(SourceError::ReadDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let read_dir_error = |source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        names.push(entry.map_err(read_dir_error)?.file_name());
    }
    // Sorted, so that problems and warnings come in a stable order.
    names.sort();

    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    // The name parts of each up file, in the order of `to_read`: made here, on one thread,
    // and moved into the migrations, so that the threads reading the files allocate nothing
    // that lasts (they would wait on each other for the one malloc arena).
    let mut ups: Vec<UpName> = Vec::new();
    let mut to_read = Vec::new();
    for os_name in names {
        let path = dir.join(&os_name);
        let file_name = match os_name.into_string() {
            Ok(file_name) => file_name,
            Err(os_name) => {
                if os_name.to_string_lossy().ends_with(".sql") {
                    warnings.push(format!(
                        "ignoring {}: the file name is not valid UTF-8",
                        path.display()
                    ));
                }
                continue;
            }
        };
        match classify(&file_name) {
            FileKind::Down => {}
            FileKind::Ignored { warn: true } => {
                warnings.push(format!(
                    "ignoring {}: {}",
                    path.display(),
                    ignored_reason(&file_name)
                ));
            }
            FileKind::Ignored { warn: false } => {
                // Flyway reads subdirectories, we do not: say so rather than skip them quietly.
                if !file_name.starts_with('.') && path.is_dir() {
                    warnings.push(format!(
                        "ignoring subdirectory {}: migrations are read from {} itself, not \
                         from its subdirectories",
                        path.display(),
                        dir.display()
                    ));
                }
            }
            FileKind::Up { version, name } => {
                ups.push(UpName {
                    version,
                    name,
                    file_name,
                });
                to_read.push(path);
            }
        }
    }
    // The first file of a version (in name order) keeps it; every other one is a problem.
    // Found by sorting indices, without a map (or a copy of each version) for a thousand files.
    let mut order: Vec<usize> = (0..ups.len()).collect();
    order.sort_unstable_by(|&a, &b| ups[a].version.cmp(&ups[b].version).then(a.cmp(&b)));
    let mut first: Option<usize> = None;
    for &index in &order {
        let first_index = match first {
            Some(found) if ups[found].version == ups[index].version => found,
            _ => {
                first = Some(index);
                continue;
            }
        };
        let (first_version, version) = (&ups[first_index].version, &ups[index].version);
        let numerically = if first_version.as_str() != version.as_str() {
            format!(
                " (versions compare numerically: {first_version} and {version} are one version)"
            )
        } else {
            String::new()
        };
        problems.push(FileProblem {
            path: to_read[index].clone(),
            line: None,
            message: format!(
                "version {version} is also the version of {}{numerically}; renumber one of them",
                to_read[first_index].display()
            ),
        });
    }
    drop(order);
    let examined = read_all(dir, &to_read).into_iter().flatten();
    // Moved into a vector of the final size: the parts are never copied whole.
    let mut migrations = Vec::with_capacity(to_read.len());
    for ((path, up), result) in to_read.into_iter().zip(ups).zip(examined) {
        match result {
            Ok(examined) => migrations.push(up.into_migration(path, examined)),
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        // The run stops here anyway: say everything that is wrong, statements included, so
        // that one fix-and-redeploy round trip is enough.
        for m in &migrations {
            if let Err(found) = read_statements(m) {
                problems.extend(found);
            }
        }
        problems.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        return Err(SourceError::Problems(problems));
    }
    // No problem, so every file found became a migration.
    if migrations.is_empty() {
        warnings.push(format!(
            "no migration files in {} (expected {NAME_FORMS})",
            dir.display()
        ));
    }
    migrations.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(Loaded {
        migrations,
        warnings,
    })
}

/// The parts of an up migration's file name.
struct UpName {
    version: Version,
    name: String,
    file_name: String,
}

impl UpName {
    /// The migration of the file at `path`, with what its content says.
    fn into_migration(self, path: PathBuf, examined: Examined) -> Migration {
        Migration {
            version: self.version,
            name: self.name,
            file_name: self.file_name,
            path,
            checksum: hex(&examined.checksum),
            options: examined.options,
        }
    }
}

/// Below this many files, one thread reads them all: starting threads would cost more.
const FILES_PER_THREAD: usize = 64;

/// What [`read_one`] made of each file of a share of the files.
type Part = Vec<Result<Examined, Vec<FileProblem>>>;

/// Reads and examines (without statements) every file of `paths` (all in `dir`): the results in
/// the same order, one part per thread. Every start does this for every file, so it is spread
/// over the machine's cores: the calling thread reads the first share itself, helpers the
/// others.
fn read_all(dir: &Path, paths: &[PathBuf]) -> Vec<Part> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
        .min(paths.len().div_ceil(FILES_PER_THREAD).max(1));
    let opener = Opener::new(dir);
    let opener = &opener;
    let read_part = move |part: &[PathBuf]| {
        let mut buffer = Vec::new();
        part.iter()
            .map(|p| read_one(opener, p, &mut buffer))
            .collect::<Vec<_>>()
    };
    if threads == 1 {
        return vec![read_part(paths)];
    }
    let chunk = paths.len().div_ceil(threads);
    let mut parts = paths.chunks(chunk);
    let first = parts.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = parts
            .map(|part| (part, scope.spawn(move || read_part(part))))
            .collect();
        let mut out = Vec::with_capacity(threads);
        out.push(read_part(first));
        for (part, helper) in helpers {
            out.push(match helper.join() {
                Ok(results) => results,
                // A panic is a bug; say which files it left unread rather than lose them.
                Err(_) => part
                    .iter()
                    .map(|path| {
                        Err(vec![FileProblem {
                            path: path.clone(),
                            line: None,
                            message: "internal error while reading the file".to_string(),
                        }])
                    })
                    .collect(),
            });
        }
        out
    })
}

/// Opens the files of one directory by name relative to the directory itself (`openat`), so
/// that the kernel resolves one path component per file rather than the whole path again
/// (about a tenth less system time for reading a thousand files, measured here).
struct Opener {
    #[cfg(unix)]
    dir: Option<fs::File>,
}

impl Opener {
    fn new(dir: &Path) -> Opener {
        Opener {
            #[cfg(unix)]
            dir: fs::File::open(dir).ok(),
        }
    }

    /// Opens `path` for reading: by its file name in the directory when the directory could
    /// be opened, by its whole path otherwise.
    fn open(&self, path: &Path) -> io::Result<fs::File> {
        #[cfg(unix)]
        if let (Some(dir), Some(name)) = (&self.dir, path.file_name()) {
            use std::os::fd::{AsRawFd, FromRawFd};
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::CString::new(name.as_bytes())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both
            // alive for the call; a descriptor returned is owned by the `File` made from it.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just opened and nothing else owns it.
            return Ok(unsafe { fs::File::from_raw_fd(fd) });
        }
        fs::File::open(path)
    }
}

/// Reads one file into `buffer` (reused from file to file) and examines it.
fn read_one(
    opener: &Opener,
    path: &Path,
    buffer: &mut Vec<u8>,
) -> Result<Examined, Vec<FileProblem>> {
    let len = opener
        .open(path)
        .and_then(|file| read_into(file, buffer))
        .map_err(|error| {
            vec![FileProblem {
                path: path.to_path_buf(),
                line: None,
                message: format!("cannot read the file: {error}"),
            }]
        })?;
    examine(path, &buffer[..len], false).map(|(examined, _)| examined)
}

/// Reads a whole file into the start of `buffer` and returns its length: read until the end,
/// no `stat` first, which `fs::read` spends on sizing a fresh buffer. The buffer only grows,
/// and is zeroed only when it does.
fn read_into(mut file: fs::File, buffer: &mut Vec<u8>) -> io::Result<usize> {
    use std::io::Read;
    let mut len = 0;
    loop {
        if len == buffer.len() {
            buffer.resize((buffer.len() * 2).max(16 * 1024), 0);
        }
        match file.read(&mut buffer[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Says where a missing relative directory was looked for: in a container the working
/// directory is often not the one the operator assumes.
fn missing_dir_hint(dir: &Path) -> String {
    let setting = "set STARTGATE_MIGRATIONS to the directory of migration files";
    match std::env::current_dir() {
        Ok(cwd) if dir.is_relative() => {
            format!(" (looked in {}; {setting})", cwd.join(dir).display())
        }
        _ => format!(" ({setting})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Renders a [`FileKind`] compactly for the tables: `up 1.1 x`, `down`, `warn`, `silent`.
    fn kind(file_name: &str) -> String {
        match classify(file_name) {
            FileKind::Up { version, name } => format!("up {version} {name}"),
            FileKind::Down => "down".to_string(),
            FileKind::Ignored { warn: true } => "warn".to_string(),
            FileKind::Ignored { warn: false } => "silent".to_string(),
        }
    }

    fn check_classify(file_name: &str, expected: &str) {
        assert_eq!(kind(file_name), expected, "file name {file_name:?}");
    }

    #[test]
    fn trims_like_the_standard_library() {
        for line in [
            "",
            "   ",
            "-- startgate:timeout 5s",
            "  \t-- x",
            "\x0B\x0C-- x",
            "\u{a0}-- startgate:no-transaction",
            " \u{2003} \u{a0}x",
            "\u{e9}t\u{e9}",
            "  \u{e9}",
        ] {
            assert_eq!(trim_start(line), line.trim_start(), "{line:?}");
        }
    }

    #[test]
    fn classifies_file_names() {
        check_classify("0001_create_users.sql", "up 0001 create_users");
        check_classify(
            "20250918153000_add_index.up.sql",
            "up 20250918153000 add_index",
        );
        check_classify("1.1_x.sql", "up 1.1 x");
        check_classify("3_a_b.sql", "up 3 a_b");
        check_classify("0002_create.users.sql", "up 0002 create.users");
        check_classify("0002_x.UP.sql", "up 0002 x");
        check_classify("V1__init.sql", "up 1 init");
        check_classify("V1_1__x.sql", "up 1.1 x");
        check_classify("V1.2__add_col.sql", "up 1.2 add_col");
        check_classify("V2__x__y.sql", "up 2 x__y");
        check_classify("0001_x.down.sql", "down");
        check_classify("V1__x.down.sql", "down");
        check_classify("notes.down.sql", "down");
        check_classify("R__views.sql", "warn");
        check_classify("notes.sql", "warn");
        check_classify("0001.sql", "warn");
        check_classify("0001_.sql", "warn");
        check_classify("0001_.up.sql", "warn");
        check_classify("V__x.sql", "warn");
        check_classify("V1__.sql", "warn");
        check_classify("V1.sql", "warn");
        check_classify("v1__x.sql", "warn");
        check_classify("1a_x.sql", "warn");
        check_classify("1..2_x.sql", "warn");
        check_classify("_x.sql", "warn");
        check_classify("0001_x.SQL", "warn");
        check_classify(".sql", "silent");
        check_classify(".0001_x.sql", "silent");
        check_classify("README.md", "silent");
        check_classify("0001_x.sql~", "silent");
        check_classify("0001_x.sql.bak", "silent");
        check_classify("0001_x", "silent");
    }

    #[test]
    fn flyway_versions_compare_as_dotted() {
        let FileKind::Up { version, .. } = classify("V1_1__x.sql") else {
            panic!("not an up migration");
        };
        assert_eq!(version, Version::parse("1.1").unwrap());
        assert_eq!(version.as_str(), "1.1");
    }

    /// Parses `text` whole (statements included) as a file called `file_name`.
    fn parse_named(
        file_name: &str,
        text: &str,
    ) -> Result<(Migration, Vec<Statement>), Vec<FileProblem>> {
        parse(&Path::new("m").join(file_name), text.as_bytes())
    }

    /// Parses `text` as `file_name` and renders the result: the problems as `line: message`
    /// (`-` for none), or the statements as `line@offset sql`.
    fn render(file_name: &str, text: &str) -> Vec<String> {
        match parse_named(file_name, text) {
            Ok((_, statements)) => statements
                .iter()
                .map(|s| format!("{}@{} {}", s.line, s.offset, s.sql))
                .collect(),
            Err(problems) => problems
                .iter()
                .map(|p| {
                    let line = p.line.map_or("-".to_string(), |l| l.to_string());
                    format!("{line}: {}", p.message)
                })
                .collect(),
        }
    }

    /// Checks the rendered result line by line; each expected entry must be a prefix of the
    /// rendered one, so that tables name the line and the gist without repeating whole messages.
    fn check(text: &str, expected: &[&str]) {
        check_file("0001_x.sql", text, expected);
    }

    fn check_file(file_name: &str, text: &str, expected: &[&str]) {
        let rendered = render(file_name, text);
        assert_eq!(
            rendered.len(),
            expected.len(),
            "text {text:?}\nrendered {rendered:#?}"
        );
        for (got, want) in rendered.iter().zip(expected) {
            assert!(
                got.starts_with(want),
                "text {text:?}\nexpected {want:?}\ngot      {got:?}"
            );
        }
    }

    fn check_options(text: &str, expected: MigrationOptions) {
        let migration =
            parse_named("0001_x.sql", text).unwrap_or_else(|p| panic!("{text:?}: {p:?}"));
        assert_eq!(migration.0.options, expected, "text {text:?}");
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn reads_directives() {
        check_options("SELECT 1;", MigrationOptions::default());
        check_options(
            "-- startgate:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);",
            MigrationOptions {
                no_transaction: true,
                ..Default::default()
            },
        );
        check_options(
            "-- startgate:lock-timeout 2s\nSELECT 1;",
            MigrationOptions {
                lock_timeout: secs(2),
                ..Default::default()
            },
        );
        check_options(
            "-- startgate:statement-timeout 1h\nSELECT 1;",
            MigrationOptions {
                statement_timeout: secs(3600),
                ..Default::default()
            },
        );
        check_options(
            "--startgate:timeout\t2h\r\nSELECT 1;",
            MigrationOptions {
                timeout: secs(7200),
                ..Default::default()
            },
        );
        // The prefix is matched without regard to case, so that it is never silently ignored.
        check_options(
            "-- StartGate:timeout 1h\nSELECT 1;",
            MigrationOptions {
                timeout: secs(3600),
                ..Default::default()
            },
        );
        check_options(
            "-- adds the index\n\n  --   startgate:timeout 1h30m  \n-- startgate: no-transaction\n\
             -- startgate:lock-timeout 500ms\n\nSELECT 1;",
            MigrationOptions {
                no_transaction: true,
                lock_timeout: Some(Duration::from_millis(500)),
                statement_timeout: None,
                timeout: secs(5400),
            },
        );
    }

    #[test]
    fn reports_bad_directives_with_their_lines() {
        check(
            "-- startgate:no-transactions\nSELECT 1;",
            &[
                "1: unknown directive startgate:no-transactions (known: no-transaction, lock-timeout",
            ],
        );
        check(
            "-- StartGate:time-out 1h\nSELECT 1;",
            &["1: unknown directive startgate:time-out"],
        );
        check(
            "-- ok\n-- startgate:lock-timeout\nSELECT 1;",
            &["2: startgate:lock-timeout needs a duration"],
        );
        check(
            "-- startgate:statement-timeout 30\nSELECT 1;",
            &["1: bad duration \"30\" for startgate:statement-timeout: missing unit"],
        );
        check(
            "-- startgate:lock-timeout 99999999h\nSELECT 1;",
            &[
                "1: startgate:lock-timeout 99999999h is more than PostgreSQL accepts (at most 596h31m23s647ms)",
            ],
        );
        check(
            "-- startgate:timeout 0\nSELECT 1;",
            &["1: startgate:timeout must be more than 0 (it is a wall-clock limit)"],
        );
        check(
            "-- startgate:timeout 2h -- long backfill\nSELECT 1;",
            &["1: bad duration \"2h -- long backfill\" for startgate:timeout"],
        );
        check(
            "-- startgate:no-transaction yes\nSELECT 1;",
            &["1: startgate:no-transaction takes no value (found \"yes\")"],
        );
        check(
            "-- startgate:timeout 1h\n\n-- startgate:timeout 2h\nSELECT 1;",
            &["3: startgate:timeout appears twice (first on line 1)"],
        );
        check(
            "SELECT 1;\n-- startgate:no-transaction\nSELECT 2;",
            &[
                "2: -- startgate:no-transaction has no effect here: directives belong in the file's leading comment lines",
            ],
        );
        check(
            "/* header */\n-- startgate:timeout 1h\nSELECT 1;",
            &["2: -- startgate:timeout has no effect here"],
        );
        // Every problem at once, in line order.
        check(
            "-- startgate:bogus\n-- startgate:lock-timeout x\nSELECT 1;\n-- startgate:timeout 1h",
            &[
                "1: unknown directive",
                "2: bad duration",
                "4: -- startgate:timeout has no effect here",
            ],
        );
    }

    #[test]
    fn splits_statements_with_file_lines_and_offsets() {
        check(
            "CREATE TABLE t (id int);\n\n  INSERT INTO t VALUES (1);\n",
            &[
                "1@0 CREATE TABLE t (id int)",
                "3@28 INSERT INTO t VALUES (1)",
            ],
        );
        check(
            "-- startgate:timeout 1h\r\nSELECT 1;\r\nSELECT 2",
            &["2@25 SELECT 1", "3@36 SELECT 2"],
        );
        check("SELECT 1;\rSELECT 2;", &["1@0 SELECT 1", "2@10 SELECT 2"]);
        // The byte order mark is not SQL, but offsets count it.
        check("\u{feff}SELECT 1;", &["1@3 SELECT 1"]);
    }

    #[test]
    fn a_no_transaction_file_must_close_its_transactions() {
        let problems = parse(
            Path::new("m/0001_open.sql"),
            b"-- startgate:no-transaction\nCREATE TABLE a (id int);\nBEGIN;\nINSERT INTO a VALUES (1);\n",
        )
        .expect_err("refused");
        assert_eq!(
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "m/0001_open.sql:3: this transaction is never committed: a no-transaction migration \
              must end every transaction it opens (add COMMIT)"
            ]
        );
        assert!(
            parse(
                Path::new("m/0001_closed.sql"),
                b"-- startgate:no-transaction\nBEGIN;\nINSERT INTO a VALUES (1);\nCOMMIT;\nVACUUM a;\n",
            )
            .is_ok()
        );
    }

    #[test]
    fn reports_files_without_statements_and_unterminated_text() {
        check("", &["-: contains no SQL statement"]);
        check(
            "-- nothing yet\n/* really */\n;\n",
            &["-: contains no SQL statement"],
        );
        check(
            "SELECT 1;\nSELECT 'oops;\n",
            &["2: unterminated quoted string: nothing closes it before the end of the file"],
        );
        check(
            "select 1;\rselect 2;\rselect 'x;\r",
            &["3: unterminated quoted string: nothing closes it before the end of the file"],
        );
        check(
            "SELECT 1;\n/* a\n/* nested */\n",
            &["2: unterminated block comment"],
        );
        check(
            "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1;\n",
            &["1: unterminated dollar-quoted string $body$"],
        );
    }

    #[test]
    fn applies_only_the_dbmate_up_section() {
        let text = "-- migrate:up\nCREATE TABLE t (id int);\n\nINSERT INTO t VALUES (1);\n\n\
                    -- migrate:down\nDROP TABLE t;\n";
        check(
            text,
            &[
                "2@14 CREATE TABLE t (id int)",
                "4@40 INSERT INTO t VALUES (1)",
            ],
        );
        let migration = parse_named("0001_x.sql", text).unwrap();
        assert_eq!(migration.0.options, MigrationOptions::default());
        // Without a down section the up section runs to the end of the file.
        check("-- comment\n--migrate:up\nSELECT 1;", &["3@24 SELECT 1"]);
        // Directives before or after the up marker are leading comment lines.
        check_options(
            "-- startgate:timeout 1h\n-- migrate:up\n-- startgate:lock-timeout 1s\nSELECT 1;",
            MigrationOptions {
                timeout: secs(3600),
                lock_timeout: secs(1),
                ..Default::default()
            },
        );
    }

    #[test]
    fn honours_dbmate_transaction_false() {
        check_options(
            "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (c);\n\
             -- migrate:down\nDROP INDEX CONCURRENTLY i;",
            MigrationOptions {
                no_transaction: true,
                ..Default::default()
            },
        );
        check_options(
            "-- migrate:up transaction:true\nSELECT 1;",
            MigrationOptions::default(),
        );
    }

    #[test]
    fn reports_dbmate_marker_problems() {
        check(
            "DROP TABLE t;\n-- migrate:down\nDROP TABLE u;",
            &["2: -- migrate:down without -- migrate:up"],
        );
        check(
            "-- migrate:down\nDROP TABLE t;\n-- migrate:up\nCREATE TABLE t ();",
            &["1: -- migrate:down comes before -- migrate:up (line 3)"],
        );
        check(
            "-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;",
            &["3: second -- migrate:up marker (the first is on line 1)"],
        );
        check(
            "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n-- migrate:down\n",
            &["5: second -- migrate:down marker"],
        );
        check(
            "SELECT 0;\n-- migrate:up\nSELECT 1;",
            &["1: SQL before -- migrate:up is never applied"],
        );
        check(
            "-- migrate:up\n-- nothing\n-- migrate:down\nDROP TABLE t;",
            &["1: the -- migrate:up section contains no SQL statement"],
        );
        check(
            "-- migrate:up transaction:off\nSELECT 1;",
            &["1: unknown option \"transaction:off\" on -- migrate:up"],
        );
        check(
            "-- migrate:upp\nSELECT 1;",
            &["1: unknown dbmate marker \"migrate:upp\""],
        );
        check(
            "-- Migrate:Up\nSELECT 1;",
            &["1: unknown dbmate marker \"Migrate:Up\""],
        );
        check(
            "-- migrate:up\nSELECT 'x;\n-- migrate:down\nSELECT 1;",
            &["2: unterminated quoted string: nothing closes it before -- migrate:down"],
        );
        check(
            "-- migrate:up\nSELECT 1;\n-- migrate:down\n-- startgate:no-transaction\nSELECT 2;",
            &["4: -- startgate:no-transaction has no effect here"],
        );
        // Prose that happens to start with `migrate:` is a comment.
        check("-- migrate: moves rows\nSELECT 1;", &["2@23 SELECT 1"]);
        // The leading comment lines end at the down marker: a directive below it is in the
        // down section, also when only comments come before the marker.
        check(
            "-- migrate:up\n-- migrate:down\n-- startgate:timeout 1s\n",
            &[
                "1: the -- migrate:up section contains no SQL statement",
                "3: -- startgate:timeout has no effect here",
            ],
        );
    }

    fn checksum(text: &str) -> String {
        parse_named("0001_x.sql", text)
            .unwrap_or_else(|p| panic!("{text:?}: {p:?}"))
            .0
            .checksum
    }

    fn check_checksum(a: &str, b: &str, equal: bool) {
        assert_eq!(checksum(a) == checksum(b), equal, "{a:?} vs {b:?}");
    }

    #[test]
    fn checksums_the_applied_text() {
        let base = "-- users\nCREATE TABLE users (id int);\nSELECT 1;\n";
        check_checksum(
            base,
            "-- users\r\nCREATE TABLE users (id int);\r\nSELECT 1;\r\n",
            true,
        );
        check_checksum(
            base,
            "-- users\rCREATE TABLE users (id int);\rSELECT 1;\r",
            true,
        );
        check_checksum(base, &format!("\u{feff}{base}"), true);
        check_checksum(base, &format!("-- startgate:timeout 1h\n{base}"), true);
        check_checksum(
            &format!("-- startgate:lock-timeout 1s\n{base}"),
            &format!("-- startgate:lock-timeout 5s\n-- startgate:no-transaction\n{base}"),
            true,
        );
        check_checksum(
            base,
            "-- users\n-- startgate:timeout 1h\nCREATE TABLE users (id int);\nSELECT 1;\n",
            true,
        );
        check_checksum(
            base,
            "-- users\nCREATE TABLE users (id  int);\nSELECT 1;\n",
            false,
        );
        check_checksum(
            base,
            "-- users\nCREATE TABLE users (id int);\nSELECT 1;",
            false,
        );
        check_checksum(
            base,
            "-- users\nCREATE TABLE users (id int);\nSELECT 2;\n",
            false,
        );
        check_checksum(
            base,
            "-- Users\nCREATE TABLE users (id int);\nSELECT 1;\n",
            false,
        );
        check_checksum(base, &format!("\n{base}"), false);
        // dbmate: only the up section counts.
        let dbmate = "-- migrate:up\nCREATE TABLE t (id int);\n-- migrate:down\nDROP TABLE t;\n";
        check_checksum(
            dbmate,
            "-- migrate:up\nCREATE TABLE t (id int);\n-- migrate:down\nDROP TABLE t CASCADE;\n",
            true,
        );
        check_checksum(dbmate, "-- migrate:up\nCREATE TABLE t (id int);\n", true);
        check_checksum(dbmate, "CREATE TABLE t (id int);\n", true);
        check_checksum(
            dbmate,
            "-- migrate:up\nCREATE TABLE t (id bigint);\n-- migrate:down\nDROP TABLE t;\n",
            false,
        );
    }

    #[test]
    fn checksum_is_lowercase_hex_sha256() {
        // sha256 of "SELECT 1;\n", as `printf 'SELECT 1;\n' | sha256sum` prints it.
        let expected = format!("{:x}", Sha256::digest(b"SELECT 1;\n"));
        assert_eq!(
            checksum("-- startgate:timeout 1h\r\nSELECT 1;\r\n"),
            expected
        );
        assert_eq!(expected.len(), 64);
        assert!(
            expected
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    /// Checks one statement in a transactional file (refused with `expected`, or allowed with
    /// `None`), and that it is allowed under `-- startgate:no-transaction`.
    fn check_transactional(sql: &str, expected: Option<&str>) {
        let text = format!("SELECT 1;\n{sql};\n");
        match expected {
            Some(message) => check(&text, &[&format!("2: {message}")]),
            None => assert!(parse_named("0001_x.sql", &text).is_ok(), "{sql:?} refused"),
        }
        // Under no-transaction the file manages its own transactions, and must close them.
        let text = format!("-- startgate:no-transaction\n{text}COMMIT;\n");
        assert!(
            parse_named("0001_x.sql", &text).is_ok(),
            "{sql:?} refused under no-transaction"
        );
        let text = format!("-- migrate:up transaction:false\nSELECT 1;\n{sql};\nCOMMIT;\n");
        assert!(
            parse_named("0001_x.sql", &text).is_ok(),
            "{sql:?} refused under transaction:false"
        );
    }

    const CONTROL: &str = " is transaction control; each migration already runs in its own \
                           transaction (use -- startgate:no-transaction to manage transactions \
                           yourself)";

    #[test]
    fn refuses_transaction_control_in_transactional_files() {
        for (sql, what) in [
            ("BEGIN", "BEGIN"),
            ("begin transaction isolation level serializable", "BEGIN"),
            ("Begin Work", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("COMMIT", "COMMIT"),
            ("commit and chain", "COMMIT"),
            ("COMMIT PREPARED 'tx1'", "COMMIT PREPARED"),
            ("END", "END"),
            ("end transaction", "END"),
            ("ROLLBACK", "ROLLBACK"),
            ("rollback work", "ROLLBACK"),
            ("ROLLBACK PREPARED 'tx1'", "ROLLBACK PREPARED"),
            ("ABORT", "ABORT"),
            ("PREPARE TRANSACTION 'tx1'", "PREPARE TRANSACTION"),
            ("/* why */ COMMIT", "COMMIT"),
        ] {
            check_transactional(sql, Some(&format!("{what}{CONTROL}")));
        }
    }

    #[test]
    fn allows_what_stays_inside_the_transaction() {
        for sql in [
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "ROLLBACK TO SAVEPOINT s",
            "rollback to s",
            "ROLLBACK WORK TO SAVEPOINT s",
            "ROLLBACK TRANSACTION TO s",
            "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND",
            "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); \
             INSERT INTO t VALUES (2); END",
            "DO $$ BEGIN PERFORM 1; COMMIT; END $$",
            "DO $do$\nBEGIN\n  RAISE NOTICE 'x';\nEND\n$do$",
            "CREATE INDEX i ON t (c)",
            "CREATE UNIQUE INDEX i ON t (c)",
            "DROP INDEX i",
            "REINDEX TABLE t",
            "REINDEX (VERBOSE) INDEX i",
            "CREATE TABLE begin_end (commit int)",
            "UPDATE t SET rollback = 1",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "ALTER TABLE t ADD COLUMN c int",
            "ANALYZE t",
        ] {
            check_transactional(sql, None);
        }
    }

    #[test]
    fn refuses_statements_that_cannot_run_in_a_transaction() {
        let outside = " cannot run inside a transaction, and this migration runs in one (add \
                       -- startgate:no-transaction to the file's leading comment lines)";
        for (sql, what) in [
            (
                "CREATE INDEX CONCURRENTLY i ON t (c)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "create unique index concurrently i on t (c)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "DROP INDEX CONCURRENTLY IF EXISTS i",
                "DROP INDEX CONCURRENTLY",
            ),
            ("REINDEX INDEX CONCURRENTLY i", "REINDEX INDEX CONCURRENTLY"),
            (
                "reindex (verbose) table concurrently t",
                "REINDEX TABLE CONCURRENTLY",
            ),
            (
                "REINDEX (CONCURRENTLY, VERBOSE) TABLE t",
                "REINDEX TABLE CONCURRENTLY",
            ),
            ("REINDEX SCHEMA public", "REINDEX SCHEMA"),
            ("REINDEX DATABASE app", "REINDEX DATABASE"),
            ("REINDEX SYSTEM", "REINDEX SYSTEM"),
            ("VACUUM", "VACUUM"),
            ("VACUUM (ANALYZE) t", "VACUUM"),
            ("CREATE DATABASE other", "CREATE DATABASE"),
            ("DROP DATABASE other", "DROP DATABASE"),
            (
                "CREATE TABLESPACE fast LOCATION '/ssd'",
                "CREATE TABLESPACE",
            ),
            ("DROP TABLESPACE fast", "DROP TABLESPACE"),
            ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
        ] {
            check_transactional(sql, Some(&format!("{what}{outside}")));
        }
    }

    #[test]
    fn reports_every_refused_statement() {
        check(
            "BEGIN;\nCREATE TABLE t ();\nCREATE INDEX CONCURRENTLY i ON t (c);\nCOMMIT;\n",
            &[
                "1: BEGIN is transaction control",
                "3: CREATE INDEX CONCURRENTLY cannot run inside a transaction",
                "4: COMMIT is transaction control",
            ],
        );
    }

    fn check_bytes(bytes: &[u8], expected: &str) {
        let problems = parse(Path::new("m/0001_x.sql"), bytes).unwrap_err();
        let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, [expected], "bytes {bytes:?}");
    }

    #[test]
    fn reports_text_that_is_not_utf8_with_its_line() {
        check_bytes(
            b"\xff SELECT 1;",
            "m/0001_x.sql:1: not valid UTF-8 (byte 0xff); save the file as UTF-8",
        );
        check_bytes(
            b"SELECT 1;\r\n-- caf\xe9\nSELECT 2;",
            "m/0001_x.sql:2: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
        );
        check_bytes(
            b"SELECT 1;\n\n\xc3",
            "m/0001_x.sql:3: not valid UTF-8 (byte 0xc3); save the file as UTF-8",
        );
        check_bytes(
            b"\xef\xbb\xbfSELECT 1;\n\x80",
            "m/0001_x.sql:2: not valid UTF-8 (byte 0x80); save the file as UTF-8",
        );
        check_bytes(
            b"\xff\xfeS\0E\0",
            "m/0001_x.sql:1: is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8",
        );
    }

    #[test]
    fn fills_the_migration() {
        let (migration, statements) = parse(
            Path::new("db/V1_1__add users.sql"),
            b"-- startgate:timeout 1h\nCREATE TABLE users ();\n",
        )
        .unwrap();
        assert_eq!(migration.version, Version::parse("1.1").unwrap());
        assert_eq!(migration.version.as_str(), "1.1");
        assert_eq!(migration.name, "add users");
        assert_eq!(migration.file_name, "V1_1__add users.sql");
        assert_eq!(migration.path, Path::new("db/V1_1__add users.sql"));
        assert_eq!(
            migration.checksum,
            format!("{:x}", Sha256::digest(b"CREATE TABLE users ();\n"))
        );
        assert_eq!(migration.options.timeout, secs(3600));
        assert_eq!(
            statements,
            [Statement {
                sql: "CREATE TABLE users ()".to_string(),
                line: 2,
                column: 1,
                offset: 24,
            }]
        );
        check_file(
            "0001_x.down.sql",
            "SELECT 1;",
            &["-: \"0001_x.down.sql\" is not an up migration file name"],
        );
    }

    #[test]
    fn displays_problems_with_path_and_line() {
        let problem = |line, message: &str| FileProblem {
            path: PathBuf::from("migrations/0004_x.sql"),
            line,
            message: message.to_string(),
        };
        assert_eq!(
            problem(Some(3), "COMMIT is transaction control").to_string(),
            "migrations/0004_x.sql:3: COMMIT is transaction control"
        );
        assert_eq!(
            problem(None, "contains no SQL statement").to_string(),
            "migrations/0004_x.sql: contains no SQL statement"
        );
        assert_eq!(
            SourceError::Problems(vec![problem(Some(1), "a")]).to_string(),
            "1 problem in migration files:\n  - migrations/0004_x.sql:1: a"
        );
        assert_eq!(
            SourceError::Problems(vec![problem(Some(1), "a"), problem(None, "b")]).to_string(),
            "2 problems in migration files:\n  - migrations/0004_x.sql:1: a\n  - \
             migrations/0004_x.sql: b"
        );
    }

    fn write(dir: &Path, name: &str, content: &[u8]) {
        fs::write(dir.join(name), content).unwrap();
    }

    #[test]
    fn loads_a_directory_sorted_by_version_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "10_ten.sql", b"SELECT 10;");
        write(root, "0002_two.up.sql", b"SELECT 2;");
        write(root, "0002_two.down.sql", b"oops, never read;");
        write(root, "V1_1__one_one.sql", b"SELECT 11;");
        write(root, "1_one.sql", b"SELECT 1;");
        write(root, "R__views.sql", b"CREATE VIEW v AS SELECT 1;");
        write(root, "notes.sql", b"");
        write(root, "README.md", b"# migrations");
        write(root, ".hidden.sql", b"");
        fs::create_dir(root.join("old")).unwrap();
        fs::create_dir(root.join(".git")).unwrap();

        let loaded = load_dir(root).unwrap();
        let versions: Vec<&str> = loaded
            .migrations
            .iter()
            .map(|m| m.version.as_str())
            .collect();
        assert_eq!(versions, ["1", "1.1", "0002", "10"]);
        assert_eq!(loaded.migrations[1].path, root.join("V1_1__one_one.sql"));
        let warnings: Vec<String> = loaded
            .warnings
            .iter()
            .map(|w| w.replace(&root.display().to_string(), "DIR"))
            .collect();
        assert_eq!(
            warnings,
            [
                "ignoring DIR/R__views.sql: Flyway repeatable migrations (R__) are not supported",
                "ignoring DIR/notes.sql: not a migration file name (expected <version>_<name>.sql, \
                 <version>_<name>.up.sql or V<version>__<name>.sql)",
                "ignoring subdirectory DIR/old: migrations are read from DIR itself, not from its \
                 subdirectories",
            ]
        );
    }

    #[test]
    fn loading_reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "0001_ok.sql", b"SELECT 1;");
        write(root, "0002_empty.sql", b"-- to do\n");
        write(root, "0003_a.sql", b"SELECT 3;");
        write(
            root,
            "3_b.up.sql",
            b"-- startgate:timeout 5\nSELECT 3;\nCOMMIT;",
        );
        write(root, "0004_latin1.sql", b"SELECT 'caf\xe9';");
        write(
            root,
            "0005_dbmate.sql",
            b"SELECT 5;\n-- migrate:down\nSELECT 0;",
        );
        fs::create_dir(root.join("0006_dir.sql")).unwrap();

        let error = load_dir(root).unwrap_err();
        let SourceError::Problems(problems) = &error else {
            panic!("expected problems, got {error:?}");
        };
        let rendered: Vec<String> = problems
            .iter()
            .map(|p| p.to_string().replace(&root.display().to_string(), "DIR"))
            .collect();
        assert_eq!(rendered.len(), 7, "{rendered:#?}");
        let expected = [
            "DIR/0002_empty.sql: contains no SQL statement",
            "DIR/0004_latin1.sql:1: not valid UTF-8 (byte 0xe9)",
            "DIR/0005_dbmate.sql:2: -- migrate:down without -- migrate:up",
            "DIR/0006_dir.sql: cannot read the file: ",
            "DIR/3_b.up.sql: version 3 is also the version of DIR/0003_a.sql (versions compare \
             numerically: 0003 and 3 are one version); renumber one of them",
            "DIR/3_b.up.sql:1: bad duration \"5\" for startgate:timeout",
            "DIR/3_b.up.sql:3: COMMIT is transaction control",
        ];
        for (got, want) in rendered.iter().zip(expected) {
            assert!(got.starts_with(want), "expected {want:?}\ngot      {got:?}");
        }
        assert!(
            error
                .to_string()
                .starts_with("7 problems in migration files:\n  - "),
            "{error}"
        );
    }

    #[test]
    fn every_other_file_of_a_version_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["2_c.sql", "02_b.sql", "002_a.sql", "1_x.sql", "V2__d.sql"] {
            write(root, name, b"SELECT 1;");
        }
        let Err(SourceError::Problems(problems)) = load_dir(root) else {
            panic!("expected problems");
        };
        let rendered: Vec<String> = problems
            .iter()
            .map(|p| p.to_string().replace(&root.display().to_string(), "DIR"))
            .collect();
        // Name order decides which file is first: 002_a.sql.
        assert_eq!(
            rendered,
            [
                "DIR/02_b.sql: version 02 is also the version of DIR/002_a.sql (versions compare \
                 numerically: 002 and 02 are one version); renumber one of them",
                "DIR/2_c.sql: version 2 is also the version of DIR/002_a.sql (versions compare \
                 numerically: 002 and 2 are one version); renumber one of them",
                "DIR/V2__d.sql: version 2 is also the version of DIR/002_a.sql (versions compare \
                 numerically: 002 and 2 are one version); renumber one of them",
            ]
        );
    }

    #[test]
    fn loading_a_missing_directory_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = load_dir(&missing).unwrap_err();
        assert!(matches!(error, SourceError::MissingDir { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "migrations directory {} does not exist (set STARTGATE_MIGRATIONS to the \
                 directory of migration files)",
                missing.display()
            )
        );
        let relative = load_dir(Path::new("no/such/migrations")).unwrap_err();
        assert!(relative.to_string().contains("(looked in /"), "{relative}");
        let file = dir.path().join("file");
        write(dir.path(), "file", b"");
        assert!(matches!(load_dir(&file), Err(SourceError::NotADir { .. })));
        let empty = load_dir(dir.path()).unwrap();
        assert!(empty.migrations.is_empty());
        assert_eq!(empty.warnings.len(), 1);
        assert!(empty.warnings[0].starts_with("no migration files in "));
    }

    /// Lines that exercise the comment, marker and directive readers when strung together.
    #[rustfmt::skip]
    const LINES: &[&str] = &[
        "", " ", "\t", "\u{a0}", "\u{85}", "\u{2028}", "\x0B\x0C", "--", "---", " -- a comment",
        "\u{a0}-- nbsp", "\u{85}-- nel", "é--", "SELECT 1; -- x", "--startgate:timeout 1s",
        "-- startgate:timeout", "-- startgate:timeout 0s",
        "-- startgate:timeout 1s", "  -- startgate:lock-timeout 2s", "-- startgate:no-transaction",
        "-- startgate:bogus", "-- StartGate:timeout 5s", "-- migrate:up", "-- migrate:down",
        "-- migrate:up transaction:false", "-- migrate:upp", "-- migrate: prose", "SELECT '--';",
        "CREATE TABLE t (id int);", "'", "a--b", "x -- startgate:timeout 1s",
    ];

    fn lf_text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(LINES), 0..12),
            any::<bool>(),
        )
            .prop_map(|(lines, end)| lines.join("\n") + if end { "\n" } else { "" })
    }

    /// Everything a parse shows an operator: the checksum and options, or the problems.
    fn outcome(
        text: &str,
        with_statements: bool,
    ) -> Result<(String, MigrationOptions), Vec<FileProblem>> {
        parse_inner(Path::new("m/0001_x.sql"), text.as_bytes(), with_statements)
            .map(|(m, _)| (m.checksum, m.options))
    }

    proptest! {
        /// The LF reader finds what reading every line finds.
        #[test]
        fn lf_outline_matches_every_line(text in lf_text()) {
            let lines = lines(&text);
            let slow = Outline::of_lines(&lines, text.len());
            let fast = Outline::of_lf_text(&text);
            let view = |o: &Outline<'_>| {
                let comments: Vec<_> =
                    o.comments.iter().map(|c| (c.index, c.start, c.next, c.text.to_string())).collect();
                (comments, o.leading_end)
            };
            prop_assert_eq!(view(&fast), view(&slow));
        }

        /// A file read on a start (comment lines only, LF) says what the same file with CRLF or
        /// lone CR line breaks says (every line read), with or without its statements.
        #[test]
        fn line_breaks_change_nothing(text in lf_text(), with_statements in any::<bool>()) {
            let lf = outcome(&text, with_statements);
            prop_assert_eq!(&lf, &outcome(&text.replace('\n', "\r\n"), with_statements));
            // Across a lone `\r`, PostgreSQL joins string literals (`split` knows): the
            // statements, and so their problems, may differ there.
            if !text.contains('\'') {
                prop_assert_eq!(&lf, &outcome(&text.replace('\n', "\r"), with_statements));
            }
        }
    }
}
