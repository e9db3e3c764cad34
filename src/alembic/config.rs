//! Reading an Alembic project's configuration, the pure part: the `-c`/`-n` options of the
//! migrate command, `alembic.ini` with Python `configparser` semantics, `[tool.alembic]` in
//! `pyproject.toml`, and from them the directories that hold the revision files. No I/O: the
//! caller reads the files (`project.rs`) and passes their text and their directory.
//!
//! Rules, each as Alembic itself applies them (`alembic/config.py`, `alembic/script/base.py`):
//! - the ini file is read the way `configparser.ConfigParser` reads it: keys are lowercased,
//!   `=` or `:` separates key and value, only full-line `#`/`;` comments exist (an inline `#` is
//!   part of the value), a line indented deeper than its key continues the value (blank lines in
//!   between are kept, trailing ones dropped), a duplicate section or key is an error;
//! - values are interpolated when read, never at parse time (the logging sections of every
//!   `alembic init` template hold `%(levelname)s` that only `logging.config` reads, raw):
//!   `%(name)s` is another key of the same section or of `[DEFAULT]`, `%(here)s` is the config
//!   file's directory, `%%` is `%`;
//! - an option is taken from the ini section first and from `[tool.alembic]` second (Alembic
//!   1.16 added pyproject.toml and lets `alembic.ini` keep only logging); see [`Options::or`];
//! - `version_locations` in the ini is split by `path_separator` (1.16), else the legacy
//!   `version_path_separator`, else on spaces and commas; `recursive_version_locations` counts
//!   only when it is exactly `true` (Alembic compares with `== "true"`, so `yes` or `True` is
//!   false there, and must be here too, or the two would read different revision files);
//! - a path in Python package form (`myapp:migrations`) is refused with a message: resolving
//!   it needs Python's import system, which startgate never runs.

use std::collections::{BTreeMap, BTreeSet};

/// The Alembic global options found in a migrate command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandConfig {
    /// `-c FILE` naming an ini file.
    pub config: Option<String>,
    /// `-c FILE` naming a `pyproject.toml` (Alembic 1.16 takes `-c` twice, once per file, and
    /// tells them apart by the name `pyproject.toml`).
    pub pyproject: Option<String>,
    /// `-n NAME`: the ini section to read; `alembic` when `None`.
    pub name: Option<String>,
}

/// Reads Alembic's global options (`-c`/`--config`, `-n`/`--name`) out of a shell command line
/// such as `cd app && poetry run alembic -c conf/alembic.ini upgrade head`.
///
/// Only the words after the word `alembic` (or a path ending in `/alembic`) and before the
/// subcommand count; when `alembic` appears more than once, the last one before `upgrade` is
/// taken. Option forms are argparse's: `-c FILE`, `-cFILE`, `-c=FILE`, `--config FILE`,
/// `--config=FILE`, unambiguous abbreviations (`--conf`), short options in a cluster (`-qc FILE`).
/// When an option is given twice, the last one wins. One level of matching quotes around a
/// value is removed.
///
/// Limitations: the command is split on whitespace, not parsed as shell, so a quoted value with
/// a space in it, a `$VARIABLE`, an `ALEMBIC_CONFIG=… alembic` prefix or a `cd` before the
/// command are not understood; the caller resolves paths against startgate's own working
/// directory.
pub fn config_from_command(command: &str) -> CommandConfig {
    let words: Vec<&str> = command.split_whitespace().collect();
    let is_alembic = |word: &&str| unquote(word).rsplit('/').next() == Some("alembic");
    let upgrade = words
        .iter()
        .position(|w| *w == "upgrade")
        .unwrap_or(words.len());
    let before_upgrade = words[..upgrade].iter().rposition(is_alembic);
    let Some(at) = before_upgrade.or_else(|| words.iter().position(is_alembic)) else {
        return CommandConfig::default();
    };
    let mut found = CommandConfig::default();
    let mut set = |option: char, value: Option<&str>| {
        let value = value.map(unquote).filter(|v| !v.is_empty());
        match (option, value) {
            ('c', Some(v)) if v.rsplit('/').next() == Some("pyproject.toml") => {
                found.pyproject = Some(v.to_string());
            }
            ('c', Some(v)) => found.config = Some(v.to_string()),
            ('n', Some(v)) => found.name = Some(v.to_string()),
            _ => {}
        }
    };
    let mut rest = words[at + 1..].iter().copied();
    while let Some(word) = rest.next() {
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            // argparse accepts any unambiguous prefix; these options all differ in their
            // first letter. `--` alone ends the options.
            let option = ["config", "name", "raiseerr", "quiet", "version", "help"]
                .into_iter()
                .find(|o| !name.is_empty() && o.starts_with(name));
            match option {
                Some("config") => set('c', inline.or_else(|| rest.next())),
                Some("name") => set('n', inline.or_else(|| rest.next())),
                Some(_) => {}
                None => break,
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, option) in short.char_indices() {
                match option {
                    'c' | 'n' | 'x' => {
                        let attached = &short[i + 1..];
                        let attached = attached.strip_prefix('=').unwrap_or(attached);
                        let value = if attached.is_empty() {
                            rest.next()
                        } else {
                            Some(attached)
                        };
                        set(option, value);
                        break;
                    }
                    // Flags without a value.
                    'q' | 'h' => {}
                    _ => return found,
                }
            }
        } else {
            // The subcommand: global options end here.
            break;
        }
    }
    found
}

/// `value` without one level of matching single or double quotes around it.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// `configparser` stops expanding `%(name)s` references after this many levels.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// An ini file read with `configparser`'s rules; values are interpolated by [`Ini::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// `[DEFAULT]` and `here`: every section sees these keys.
    defaults: BTreeMap<String, RawValue>,
    /// Every other section, by its name (case-sensitive, as in `configparser`).
    sections: BTreeMap<String, BTreeMap<String, RawValue>>,
}

/// A value as written, before interpolation, and the line of its key (0 for `here`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawValue {
    text: String,
    line: usize,
}

/// A problem in an ini file, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct IniError {
    pub line: usize,
    pub problem: String,
}

/// Reads an ini file's text. `here` is the absolute directory of the file, the value of
/// `%(here)s` (a `here` key in `[DEFAULT]` overrides it, as in Alembic).
pub fn parse_ini(text: &str, here: &str) -> Result<Ini, IniError> {
    /// A key being read: its section (`None`: `[DEFAULT]`), name, line, and lines of value.
    struct Pending {
        section: Option<String>,
        key: String,
        line: usize,
        lines: Vec<String>,
    }
    let error = |line: usize, problem: String| IniError { line, problem };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pending: Vec<Pending> = Vec::new();
    let mut sections: BTreeSet<String> = BTreeSet::new();
    let mut keys: BTreeSet<(Option<String>, String)> = BTreeSet::new();
    // `None` before the first header; `Some(None)` in `[DEFAULT]`.
    let mut section: Option<Option<String>> = None;
    // The key whose value the next indented line continues.
    let mut open: Option<usize> = None;
    let mut indent_level = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let stripped = line.trim();
        if stripped.is_empty() || stripped.starts_with(['#', ';']) {
            // A blank line may sit inside a value; a comment line is skipped entirely.
            if stripped.is_empty()
                && let Some(at) = open
            {
                pending[at].lines.push(String::new());
            }
            continue;
        }
        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if let Some(at) = open
            && indent > indent_level
        {
            pending[at].lines.push(stripped.to_string());
            continue;
        }
        indent_level = indent;
        if let Some(name) = section_header(stripped) {
            if name == "DEFAULT" {
                section = Some(None);
            } else if !sections.insert(name.to_string()) {
                return Err(error(number, format!("section [{name}] appears twice")));
            } else {
                section = Some(Some(name.to_string()));
            }
            open = None;
            continue;
        }
        let Some(current) = &section else {
            return Err(error(
                number,
                format!("{stripped:?} comes before any [section] header"),
            ));
        };
        let Some(at) = stripped.find(['=', ':']) else {
            return Err(error(
                number,
                format!("expected `key = value` or a [section] header, found {stripped:?}"),
            ));
        };
        let key = stripped[..at].trim_end().to_lowercase();
        if key.is_empty() {
            return Err(error(
                number,
                format!("no key before the `{}`", &stripped[at..=at]),
            ));
        }
        if !keys.insert((current.clone(), key.clone())) {
            let name = current.as_deref().unwrap_or("DEFAULT");
            return Err(error(number, format!("{key} appears twice in [{name}]")));
        }
        pending.push(Pending {
            section: current.clone(),
            key,
            line: number,
            lines: vec![stripped[at + 1..].trim().to_string()],
        });
        open = Some(pending.len() - 1);
    }

    let mut ini = Ini::default();
    ini.defaults.insert(
        "here".to_string(),
        RawValue {
            text: here.to_string(),
            line: 0,
        },
    );
    for name in sections {
        ini.sections.insert(name, BTreeMap::new());
    }
    for entry in pending {
        let value = RawValue {
            text: entry.lines.join("\n").trim_end().to_string(),
            line: entry.line,
        };
        let target = match &entry.section {
            None => &mut ini.defaults,
            Some(name) => ini.sections.entry(name.clone()).or_default(),
        };
        target.insert(entry.key, value);
    }
    Ok(ini)
}

/// The name in a `[name]` header line: up to the last `]`, as `configparser`'s `\[(.+)\]`.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

impl Ini {
    /// Whether the file has this section (`[DEFAULT]` does not count, as in `configparser`).
    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    /// The interpolated value of `key` (any case) in `section`, or in `[DEFAULT]`; `None` when
    /// the section or the key is missing.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, IniError> {
        let own = if section == "DEFAULT" {
            None
        } else {
            match self.sections.get(section) {
                Some(own) => Some(own),
                None => return Ok(None),
            }
        };
        let lookup = |name: &str| own.and_then(|o| o.get(name)).or(self.defaults.get(name));
        let key = key.to_lowercase();
        let Some(raw) = lookup(&key) else {
            return Ok(None);
        };
        let mut out = String::new();
        let at = Reference {
            section,
            key: &key,
            raw,
        };
        interpolate(&at, &raw.text, &lookup, 1, &mut out)?;
        Ok(Some(out))
    }
}

/// The key being read, for the messages of an interpolation error.
struct Reference<'a> {
    section: &'a str,
    key: &'a str,
    raw: &'a RawValue,
}

impl Reference<'_> {
    fn error(&self, problem: String) -> IniError {
        IniError {
            line: self.raw.line,
            problem: format!("{} = {}: {problem}", self.key, self.raw.text),
        }
    }
}

/// `configparser`'s `BasicInterpolation`: appends `text` to `out` with `%%` and `%(name)s`
/// replaced, expanding referenced values that contain `%` in turn.
fn interpolate<'a>(
    at: &Reference<'_>,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<&'a RawValue>,
    depth: usize,
    out: &mut String,
) -> Result<(), IniError> {
    if depth > MAX_INTERPOLATION_DEPTH {
        return Err(at.error(format!(
            "references nest deeper than {MAX_INTERPOLATION_DEPTH} levels (does a value refer \
             to itself?)"
        )));
    }
    let mut rest = text;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
            continue;
        }
        let reference = rest.strip_prefix("%(").and_then(|inner| {
            let close = inner.find(')').filter(|c| *c > 0)?;
            let after = inner[close + 1..].strip_prefix('s')?;
            Some((&inner[..close], after))
        });
        let Some((name, after)) = reference else {
            return Err(at.error(format!(
                "bad reference at {rest:?}: write %(name)s for another key, %% for a literal %"
            )));
        };
        rest = after;
        let name = name.to_lowercase();
        let Some(value) = lookup(&name) else {
            return Err(at.error(format!(
                "%({name})s is not a key of [{}] or [DEFAULT]",
                at.section
            )));
        };
        if value.text.contains('%') {
            interpolate(at, &value.text, lookup, depth + 1, out)?;
        } else {
            out.push_str(&value.text);
        }
    }
    out.push_str(rest);
    Ok(())
}

/// What startgate needs of an Alembic configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The script directory (`env.py`, and `versions/` unless `version_locations` is set),
    /// `%(here)s` substituted; a relative path is relative to the working directory.
    pub script_location: String,
    /// Where the revision files are, when set; replaces `<script_location>/versions`.
    pub version_locations: Option<Vec<String>>,
    /// `recursive_version_locations`: read subdirectories of the version locations too.
    pub recursive: bool,
}

/// The options one config file sets; `None` where the file does not set one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub script_location: Option<String>,
    pub version_locations: Option<Vec<String>>,
    pub recursive: Option<bool>,
}

impl Options {
    /// Each option from `self`, else from `fallback`: Alembic ≥ 1.16 takes every option from
    /// the ini section first and from `[tool.alembic]` second.
    pub fn or(self, fallback: Options) -> Options {
        Options {
            script_location: self.script_location.or(fallback.script_location),
            version_locations: self.version_locations.or(fallback.version_locations),
            recursive: self.recursive.or(fallback.recursive),
        }
    }

    /// The settings, when there is a `script_location` (without one Alembic cannot run).
    pub fn settings(self) -> Option<Settings> {
        Some(Settings {
            script_location: self.script_location?,
            version_locations: self.version_locations,
            recursive: self.recursive.unwrap_or(false),
        })
    }
}

/// The options of the ini file's `section` (`alembic` unless `-n` names another). A missing
/// section sets nothing. Errors name the key and its line.
pub fn ini_options(ini: &Ini, section: &str) -> Result<Options, String> {
    let get = |key: &str| ini.get(section, key).map_err(|e| e.to_string());
    let version_locations = match get("version_locations")?.filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => {
            let mut separator = None;
            for key in ["path_separator", "version_path_separator"] {
                if let Some(name) = get(key)? {
                    separator = Some(separator_char(key, &name)?);
                    break;
                }
            }
            Some(split_locations(&value, separator)).filter(|l| !l.is_empty())
        }
    };
    Ok(Options {
        script_location: get("script_location")?,
        version_locations,
        recursive: get("recursive_version_locations")?.map(|v| v == "true"),
    })
}

/// The character a `path_separator` (or `version_path_separator`) value names.
fn separator_char(key: &str, name: &str) -> Result<char, String> {
    match name {
        "space" => Ok(' '),
        "newline" => Ok('\n'),
        // `os.pathsep` on the Unix systems startgate runs on.
        "os" | ":" => Ok(':'),
        ";" => Ok(';'),
        _ => {
            let hint = if name.contains('#') {
                " (an inline `#` comment is part of the value in an ini file: move it to a line \
                 of its own)"
            } else {
                ""
            };
            Err(format!(
                "{key} = {name}: expected os, :, ;, space or newline{hint}"
            ))
        }
    }
}

/// `version_locations` split by `separator`, or, without one, by Alembic's legacy rule (the
/// regular expression `, *|(?: +)`); empty items are dropped.
fn split_locations(value: &str, separator: Option<char>) -> Vec<String> {
    let items: Vec<&str> = match separator {
        Some(separator) => value.split(separator).map(str::trim).collect(),
        // Splitting at every comma and every space and dropping the empty pieces gives what
        // the regular expression gives once its empty pieces are dropped.
        None => value.split([',', ' ']).collect(),
    };
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// The options of `[tool.alembic]` in a pyproject.toml (Alembic ≥ 1.16), or `None` when it has
/// no such table. `here` is the absolute directory of the file, for `%(here)s`.
pub fn pyproject_options(text: &str, here: &str) -> Result<Option<Options>, String> {
    let document: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!("not valid TOML: line {line}: {}", e.message().trim()),
            None => format!("not valid TOML: {}", e.message().trim()),
        }
    })?;
    let Some(tool) = document.get("tool") else {
        return Ok(None);
    };
    let Some(alembic) = tool.as_table().and_then(|t| t.get("alembic")) else {
        return Ok(None);
    };
    let Some(alembic) = alembic.as_table() else {
        return Err("[tool.alembic] is not a table".to_string());
    };
    let string = |key: &str, value: &toml::Value| match value.as_str() {
        Some(s) => substitute_here(key, s, here),
        None => Err(format!("{key} in [tool.alembic] must be a string")),
    };
    let script_location = match alembic.get("script_location") {
        Some(value) => Some(string("script_location", value)?),
        None => None,
    };
    let version_locations = match alembic.get("version_locations") {
        None => None,
        Some(toml::Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item.as_str() {
                    Some(s) => substitute_here("version_locations", s, here),
                    None => Err(
                        "version_locations in [tool.alembic] must be a list of strings".to_string(),
                    ),
                })
                .filter(|item| !matches!(item, Ok(s) if s.is_empty()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(toml::Value::String(value)) => {
            let separator = match alembic.get("path_separator").and_then(|v| v.as_str()) {
                Some(name) => Some(separator_char("path_separator", name)?),
                None => None,
            };
            Some(split_locations(
                &substitute_here("version_locations", value, here)?,
                separator,
            ))
        }
        Some(_) => {
            return Err(
                "version_locations in [tool.alembic] must be a list of strings".to_string(),
            );
        }
    };
    let recursive = match alembic.get("recursive_version_locations") {
        None => None,
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(_) => {
            return Err(
                "recursive_version_locations in [tool.alembic] must be true or false".to_string(),
            );
        }
    };
    Ok(Some(Options {
        script_location,
        version_locations: version_locations.filter(|l| !l.is_empty()),
        recursive,
    }))
}

/// Python's `value % {"here": here}`, which Alembic applies to every pyproject.toml string:
/// `%(here)s` is the directory, `%%` is `%`, anything else after a `%` is an error.
fn substitute_here(key: &str, value: &str, here: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("%(here)s") {
            out.push_str(here);
            rest = after;
        } else {
            return Err(format!(
                "{key} = {value:?} in [tool.alembic]: only %(here)s can be substituted there \
                 (write %% for a literal %)"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The settings of an ini file's section alone: `None` when the section is missing or has no
/// `script_location` (the caller may then try pyproject.toml).
pub fn from_ini(ini: &Ini, section: &str) -> Result<Option<Settings>, String> {
    Ok(ini_options(ini, section)?.settings())
}

/// The settings of a pyproject.toml alone: `None` without `[tool.alembic]` or without a
/// `script_location` in it.
pub fn from_pyproject(text: &str, here: &str) -> Result<Option<Settings>, String> {
    Ok(pyproject_options(text, here)?.and_then(Options::settings))
}

/// The directories holding the revision files, in order: `version_locations` when set, else
/// `<script_location>/versions`. Relative paths stay relative (to the working directory).
pub fn version_dirs(settings: &Settings) -> Result<Vec<String>, String> {
    match &settings.version_locations {
        Some(locations) => locations
            .iter()
            .map(|location| filesystem_path("version_locations entry", location))
            .collect(),
        None => {
            let script = filesystem_path("script_location", &settings.script_location)?;
            if script.is_empty() {
                return Err("script_location is empty".to_string());
            }
            Ok(vec![format!("{}/versions", script.trim_end_matches('/'))])
        }
    }
}

/// `path`, unless it is in Python package form (`package:dir`), as Alembic tells them apart:
/// a relative path with a `:` in it.
fn filesystem_path(what: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') && path.contains(':') {
        return Err(format!(
            "{what} {path} is a Python package location, which startgate cannot resolve without \
             Python: use a filesystem path (such as %(here)s/…), or set STARTGATE_ALEMBIC=off"
        ));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_command(command: &str, config: Option<&str>, name: Option<&str>) {
        let found = config_from_command(command);
        assert_eq!(
            (found.config.as_deref(), found.name.as_deref()),
            (config, name),
            "{command}"
        );
    }

    #[test]
    fn reads_config_and_name_from_the_command() {
        check_command("alembic upgrade head", None, None);
        check_command(
            "alembic -c conf/alembic.ini upgrade head",
            Some("conf/alembic.ini"),
            None,
        );
        check_command(
            "alembic --config=alembic.ini upgrade heads",
            Some("alembic.ini"),
            None,
        );
        check_command(
            "alembic --config deploy.ini upgrade head",
            Some("deploy.ini"),
            None,
        );
        check_command(
            "alembic -cdeploy.ini upgrade head",
            Some("deploy.ini"),
            None,
        );
        check_command(
            "alembic -c=deploy.ini upgrade head",
            Some("deploy.ini"),
            None,
        );
        check_command(
            "alembic --conf deploy.ini upgrade head",
            Some("deploy.ini"),
            None,
        );
        check_command(
            "alembic -qc deploy.ini upgrade head",
            Some("deploy.ini"),
            None,
        );
        check_command(
            "cd app && alembic -n staging upgrade head",
            None,
            Some("staging"),
        );
        check_command("alembic --name=db2 upgrade head", None, Some("db2"));
        check_command("alembic -ndb2 upgrade head", None, Some("db2"));
        check_command(
            "python -m alembic -c x.ini upgrade head",
            Some("x.ini"),
            None,
        );
        check_command(
            "poetry run alembic --name db2 -c a.ini upgrade head",
            Some("a.ini"),
            Some("db2"),
        );
        // Words split on whitespace (documented): a quoted value with a space is cut.
        check_command(
            ".venv/bin/alembic -c 'my conf.ini' upgrade head",
            Some("'my"),
            None,
        );
        check_command(
            "/opt/venv/bin/alembic -c \"deploy/alembic.ini\" -n 'blue' upgrade head",
            Some("deploy/alembic.ini"),
            Some("blue"),
        );
        check_command(
            "alembic -x tenant=a -c a.ini --raiseerr upgrade head",
            Some("a.ini"),
            None,
        );
        // Options after the subcommand are the subcommand's, not Alembic's.
        check_command("alembic upgrade head -c other.ini", None, None);
        check_command(
            "alembic -c a.ini -c b.ini upgrade head",
            Some("b.ini"),
            None,
        );
        // The `alembic` that runs the upgrade, not an earlier mention of it.
        check_command(
            "pip install alembic && alembic -c a.ini upgrade head",
            Some("a.ini"),
            None,
        );
        check_command("python manage.py migrate -c x.ini", None, None);
        check_command("alembic-utils -c x.ini upgrade head", None, None);
    }

    #[test]
    fn a_pyproject_named_by_c_is_kept_apart() {
        let found =
            config_from_command("alembic -c pyproject.toml -c conf/alembic.ini upgrade head");
        assert_eq!(
            found,
            CommandConfig {
                config: Some("conf/alembic.ini".to_string()),
                pyproject: Some("pyproject.toml".to_string()),
                name: None,
            }
        );
    }

    /// `alembic init` (1.13), trimmed of nothing that matters: the comments, the commented
    /// `version_locations`, the inline comment after `version_path_separator`, the logging
    /// sections with their raw `%(levelname)s`.
    const INI_1_13: &str = r#"# A generic, single database configuration.

[alembic]
# path to migration scripts
script_location = alembic

# template used to generate migration file names; The default value is %%(rev)s_%%(slug)s
# file_template = %%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s

# sys.path path, will be prepended to sys.path if present.
# defaults to the current working directory.
prepend_sys_path = .

# version location specification; This defaults
# to alembic/versions.  When using multiple version
# directories, initial revisions must be specified with --version-path.
# The path separator used here should be the separator specified by "version_path_separator" below.
# version_locations = %(here)s/bar:%(here)s/bat:alembic/versions

# version path separator; As mentioned above, this is the character used to split
# version_locations. The default within new alembic.ini files is "os", which uses os.pathsep.
# If this key is omitted entirely, it falls back to the legacy behavior of splitting on spaces and/or commas.
# Valid values for version_path_separator are:
#
# version_path_separator = :
# version_path_separator = ;
# version_path_separator = space
# version_path_separator = newline
version_path_separator = os  # Use os.pathsep. Default configuration used for new projects.

# set to 'true' to search source files recursively
# in each "version_locations" directory
# new in Alembic version 1.10
# recursive_version_locations = false

sqlalchemy.url = driver://user:pass@localhost/dbname


[post_write_hooks]
# hooks = black
# black.type = console_scripts

# Logging configuration
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"#;

    /// `alembic init` (1.16): `%(here)s/alembic` and `path_separator = os`.
    const INI_1_16: &str = r#"# A generic, single database configuration.

[alembic]

# path to migration scripts.
# this is typically a path given in POSIX (e.g. forward slashes)
# format, relative to the token %(here)s which refers to the location of this
# ini file
script_location = %(here)s/alembic

# version location specification; This defaults
# to <script_location>/versions.  When using multiple version
# directories, initial revisions must be specified with --version-path.
# The path separator used here should be the separator specified by "path_separator"
# below.
# version_locations = %(here)s/bar:%(here)s/bat:%(here)s/alembic/versions

# path_separator; This indicates what character is used to split lists of file
# paths, including version_locations and prepend_sys_path within configparser
# files such as alembic.ini.
#
# Valid values for path_separator are:
#
# path_separator = :
# path_separator = ;
# path_separator = space
# path_separator = newline
#
# Use os.pathsep. Default configuration used for new projects.
path_separator = os

# database URL.  This is consumed by the user-maintained env.py script only.
sqlalchemy.url = driver://user:pass@localhost/dbname

[loggers]
keys = root,sqlalchemy,alembic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"#;

    /// `alembic init --template pyproject` (1.16): the `[tool.alembic]` it appends.
    const PYPROJECT: &str = r#"[project]
name = "shop"
version = "0.1.0"
dependencies = ["alembic>=1.16", "psycopg[binary]"]

[tool.alembic]

# path to migration scripts.
# this is typically a path given in POSIX (e.g. forward slashes)
# format, relative to the token %(here)s which refers to the location of this
# ini file
script_location = "%(here)s/alembic"

# template used to generate migration file names; The default value is %%(rev)s_%%(slug)s
# file_template = "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s"

# additional paths to be prepended to sys.path. defaults to the current working directory.
prepend_sys_path = [
    "."
]

# version location specification; This defaults
# to <script_location>/versions.  When using multiple version
# directories, initial revisions must be specified with --version-path.
# version_locations = [
#    "%(here)s/alembic/versions",
#    "%(here)s/foo/bar"
# ]

# set to 'true' to search source files recursively
# in each "version_locations" directory
# new in Alembic version 1.10
# recursive_version_locations = false

# [[tool.alembic.post_write_hooks]]
# name = "black"
# type = "console_scripts"
# entrypoint = "black"
# options = "-l 79 REVISION_SCRIPT_FILENAME"
"#;

    fn check_ini(text: &str, section: &str, key: &str, expected: Result<Option<&str>, &str>) {
        let got = parse_ini(text, "/srv/app")
            .and_then(|ini| ini.get(section, key))
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_ref().map(Option::as_deref).map_err(String::as_str),
            expected,
            "[{section}] {key} in:\n{text}"
        );
    }

    #[test]
    fn reads_ini_files_as_configparser_does() {
        check_ini(INI_1_13, "alembic", "script_location", Ok(Some("alembic")));
        check_ini(
            INI_1_13,
            "alembic",
            "sqlalchemy.url",
            Ok(Some("driver://user:pass@localhost/dbname")),
        );
        // An inline `#` is part of the value (configparser's default).
        check_ini(
            INI_1_13,
            "alembic",
            "version_path_separator",
            Ok(Some(
                "os  # Use os.pathsep. Default configuration used for new projects.",
            )),
        );
        check_ini(INI_1_13, "alembic", "version_locations", Ok(None));
        check_ini(INI_1_13, "logger_root", "qualname", Ok(Some("")));
        check_ini(INI_1_13, "nope", "script_location", Ok(None));
        check_ini(
            INI_1_16,
            "alembic",
            "script_location",
            Ok(Some("/srv/app/alembic")),
        );
        // Keys are case-insensitive; `:` separates too; the first separator counts.
        check_ini(
            "[a]\nScript_Location: x\n",
            "a",
            "SCRIPT_location",
            Ok(Some("x")),
        );
        check_ini(
            "[a]\nurl = p://u:pw@h\n",
            "a",
            "url",
            Ok(Some("p://u:pw@h")),
        );
        check_ini("[a]\nk: v = w\n", "a", "k", Ok(Some("v = w")));
        // Comment lines, indented or not, are skipped, also inside a value.
        check_ini(
            "[a]\n; one\n  # two\nk = v\n  # three\n  w\n",
            "a",
            "k",
            Ok(Some("v\nw")),
        );
        // Continuation lines, with blank lines kept inside and dropped at the end.
        check_ini(
            "[a]\nk = one\n    two\n\n    three\n\n\nj = 1\n",
            "a",
            "k",
            Ok(Some("one\ntwo\n\nthree")),
        );
        // The empty first line stays: configparser strips only the end.
        check_ini("[a]\nk =\n  one\n  two\n", "a", "k", Ok(Some("\none\ntwo")));
        // An indented key right after a header is a key, not a continuation.
        check_ini("[a]\n  k = v\n", "a", "k", Ok(Some("v")));
        // [DEFAULT] is seen from every section; the section's own key wins.
        check_ini("[DEFAULT]\nk = d\n[a]\nj = 1\n", "a", "k", Ok(Some("d")));
        check_ini(
            "[DEFAULT]\nk = d\n[a]\nk = own\n",
            "a",
            "k",
            Ok(Some("own")),
        );
        check_ini("\u{feff}[a]\r\nk = v\r\n", "a", "k", Ok(Some("v")));
    }

    #[test]
    fn interpolates_when_a_value_is_read() {
        check_ini("[a]\nk = %(here)s/x\n", "a", "k", Ok(Some("/srv/app/x")));
        check_ini("[a]\nk = 100%%\n", "a", "k", Ok(Some("100%")));
        check_ini(
            "[a]\nroot = %(here)s/db\nk = %(ROOT)s/versions\n",
            "a",
            "k",
            Ok(Some("/srv/app/db/versions")),
        );
        check_ini(
            "[DEFAULT]\nroot = /opt\n[a]\nk = %(root)s/v\n",
            "a",
            "k",
            Ok(Some("/opt/v")),
        );
        check_ini(
            "[DEFAULT]\nhere = /else\n[a]\nk = %(here)s\n",
            "a",
            "k",
            Ok(Some("/else")),
        );
        // Nested references are expanded, `%%` at every level.
        check_ini(
            "[a]\nx = 50%%\ny = %(x)s of %(here)s\nk = [%(y)s]\n",
            "a",
            "k",
            Ok(Some("[50% of /srv/app]")),
        );
        check_ini(
            "[b]\nroot = /b\n[a]\nk = %(root)s/v\n",
            "a",
            "k",
            Err("line 4: k = %(root)s/v: %(root)s is not a key of [a] or [DEFAULT]"),
        );
        check_ini(
            "[a]\nk = 5% off\n",
            "a",
            "k",
            Err(
                "line 2: k = 5% off: bad reference at \"% off\": write %(name)s for another \
                 key, %% for a literal %",
            ),
        );
        check_ini(
            "[a]\nk = %(here)d\n",
            "a",
            "k",
            Err(
                "line 2: k = %(here)d: bad reference at \"%(here)d\": write %(name)s for \
                 another key, %% for a literal %",
            ),
        );
        check_ini(
            "[a]\nk = %(j)s\nj = %(k)s\n",
            "a",
            "k",
            Err(
                "line 2: k = %(j)s: references nest deeper than 10 levels (does a value refer \
                 to itself?)",
            ),
        );
        // Only the value read is interpolated: the logging sections stay unread.
        check_ini(INI_1_13, "alembic", "prepend_sys_path", Ok(Some(".")));
        check_ini(
            INI_1_13,
            "formatter_generic",
            "datefmt",
            Err(
                "line 76: datefmt = %H:%M:%S: bad reference at \"%H:%M:%S\": write %(name)s \
                 for another key, %% for a literal %",
            ),
        );
    }

    #[test]
    fn refuses_malformed_ini_files_with_the_line() {
        for (text, error) in [
            (
                "k = v\n[a]\n",
                "line 1: \"k = v\" comes before any [section] header",
            ),
            (
                "[a]\nk = v\njust words\n",
                "line 3: expected `key = value` or a [section] header, found \"just words\"",
            ),
            ("[a]\n= v\n", "line 2: no key before the `=`"),
            (
                "[a]\nk = 1\n[b]\n[a]\n",
                "line 4: section [a] appears twice",
            ),
            ("[a]\nk = 1\nK = 2\n", "line 3: k appears twice in [a]"),
            (
                "[DEFAULT]\nk = 1\nk = 2\n",
                "line 3: k appears twice in [DEFAULT]",
            ),
        ] {
            assert_eq!(
                parse_ini(text, "/x").map_err(|e| e.to_string()),
                Err(error.to_string()),
                "{text}"
            );
        }
    }

    fn settings(script: &str, locations: Option<&[&str]>, recursive: bool) -> Settings {
        Settings {
            script_location: script.to_string(),
            version_locations: locations.map(|l| l.iter().map(ToString::to_string).collect()),
            recursive,
        }
    }

    fn check_from_ini(text: &str, section: &str, expected: Result<Option<Settings>, &str>) {
        let got = parse_ini(text, "/srv/app")
            .map_err(|e| e.to_string())
            .and_then(|ini| from_ini(&ini, section));
        assert_eq!(
            got,
            expected.map_err(ToString::to_string),
            "[{section}] in:\n{text}"
        );
    }

    #[test]
    fn settings_from_ini_files() {
        check_from_ini(
            INI_1_13,
            "alembic",
            Ok(Some(settings("alembic", None, false))),
        );
        check_from_ini(
            &INI_1_13.replace(
                "script_location = alembic",
                "script_location = %(here)s/alembic",
            ),
            "alembic",
            Ok(Some(settings("/srv/app/alembic", None, false))),
        );
        check_from_ini(
            INI_1_16,
            "alembic",
            Ok(Some(settings("/srv/app/alembic", None, false))),
        );
        // The template's example, uncommented, under 1.16's path_separator.
        check_from_ini(
            &INI_1_16.replace("# version_locations = ", "version_locations = "),
            "alembic",
            Ok(Some(settings(
                "/srv/app/alembic",
                Some(&["/srv/app/bar", "/srv/app/bat", "/srv/app/alembic/versions"]),
                false,
            ))),
        );
        // Under 1.13's template the inline comment makes the separator invalid, in Alembic too.
        check_from_ini(
            &INI_1_13.replace("# version_locations = ", "version_locations = "),
            "alembic",
            Err(
                "version_path_separator = os  # Use os.pathsep. Default configuration used for \
                 new projects.: expected os, :, ;, space or newline (an inline `#` comment is \
                 part of the value in an ini file: move it to a line of its own)",
            ),
        );
        // No section, or no script_location in it: nothing (the caller tries pyproject.toml).
        check_from_ini(INI_1_13, "staging", Ok(None));
        check_from_ini(
            "[alembic]\nsqlalchemy.url = x\n[loggers]\nkeys = root\n",
            "alembic",
            Ok(None),
        );
        // -n picks the section; [DEFAULT] fills in.
        let multi = "[DEFAULT]\nscript_location = %(here)s/migrations\n\n[alembic]\n\n\
                     [db2]\nscript_location = db2\nrecursive_version_locations = true\n";
        check_from_ini(
            multi,
            "alembic",
            Ok(Some(settings("/srv/app/migrations", None, false))),
        );
        check_from_ini(multi, "db2", Ok(Some(settings("db2", None, true))));
        check_from_ini(
            "[alembic]\nscript_location = %(root)s/a\n",
            "alembic",
            Err(
                "line 2: script_location = %(root)s/a: %(root)s is not a key of [alembic] or \
                 [DEFAULT]",
            ),
        );
    }

    fn check_locations(lines: &str, expected: Result<Option<&[&str]>, &str>) {
        let text = format!("[alembic]\nscript_location = s\n{lines}\n");
        let got = parse_ini(&text, "/h")
            .map_err(|e| e.to_string())
            .and_then(|ini| ini_options(&ini, "alembic"))
            .map(|o| o.version_locations);
        let expected = expected
            .map(|l| l.map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()))
            .map_err(ToString::to_string);
        assert_eq!(got, expected, "{lines}");
    }

    #[test]
    fn splits_version_locations_as_alembic_does() {
        check_locations("", Ok(None));
        check_locations("version_locations =", Ok(None));
        // Legacy: no separator option, spaces and commas.
        check_locations(
            "version_locations = a b,c, d ,, e",
            Ok(Some(&["a", "b", "c", "d", "e"])),
        );
        check_locations("version_locations = a:b", Ok(Some(&["a:b"])));
        check_locations(
            "path_separator = os\nversion_locations = %(here)s/a: b :",
            Ok(Some(&["/h/a", "b"])),
        );
        check_locations(
            "path_separator = ;\nversion_locations = a b;c",
            Ok(Some(&["a b", "c"])),
        );
        check_locations(
            "path_separator = space\nversion_locations = a  b",
            Ok(Some(&["a", "b"])),
        );
        check_locations(
            "path_separator = newline\nversion_locations =\n  a b\n  c",
            Ok(Some(&["a b", "c"])),
        );
        check_locations(
            "version_path_separator = :\nversion_locations = a:b c",
            Ok(Some(&["a", "b c"])),
        );
        // path_separator (1.16) wins over the legacy version_path_separator.
        check_locations(
            "path_separator = ;\nversion_path_separator = :\nversion_locations = a:b;c",
            Ok(Some(&["a:b", "c"])),
        );
        check_locations(
            "path_separator = ,\nversion_locations = a,b",
            Err("path_separator = ,: expected os, :, ;, space or newline"),
        );
    }

    #[test]
    fn recursive_only_when_exactly_true() {
        for (value, expected) in [
            ("true", Some(true)),
            ("false", Some(false)),
            ("True", Some(false)),
            ("yes", Some(false)),
        ] {
            let text = format!("[alembic]\nrecursive_version_locations = {value}\n");
            let options = parse_ini(&text, "/h")
                .map_err(|e| e.to_string())
                .and_then(|ini| ini_options(&ini, "alembic"));
            assert_eq!(options.map(|o| o.recursive), Ok(expected), "{value}");
        }
    }

    fn check_pyproject(text: &str, expected: Result<Option<Options>, &str>) {
        assert_eq!(
            pyproject_options(text, "/srv/app"),
            expected.map_err(ToString::to_string),
            "{text}"
        );
    }

    fn options(
        script: Option<&str>,
        locations: Option<&[&str]>,
        recursive: Option<bool>,
    ) -> Options {
        Options {
            script_location: script.map(ToString::to_string),
            version_locations: locations.map(|l| l.iter().map(ToString::to_string).collect()),
            recursive,
        }
    }

    #[test]
    fn reads_tool_alembic_from_pyproject() {
        check_pyproject(
            PYPROJECT,
            Ok(Some(options(Some("/srv/app/alembic"), None, None))),
        );
        check_pyproject(
            &PYPROJECT
                .replace("# version_locations = [", "version_locations = [")
                .replace("#    \"%(here)s", "    \"%(here)s")
                .replace("# ]", "]")
                .replace(
                    "# recursive_version_locations = false",
                    "recursive_version_locations = true",
                ),
            Ok(Some(options(
                Some("/srv/app/alembic"),
                Some(&["/srv/app/alembic/versions", "/srv/app/foo/bar"]),
                Some(true),
            ))),
        );
        check_pyproject("[project]\nname = \"x\"\n", Ok(None));
        check_pyproject("[tool.black]\nline-length = 99\n", Ok(None));
        check_pyproject(
            "[tool.alembic]\nversion_locations = []\n",
            Ok(Some(options(None, None, None))),
        );
        check_pyproject(
            "[tool.alembic]\nscript_location = \"db\"\nversion_locations = \"a, b\"\n",
            Ok(Some(options(Some("db"), Some(&["a", "b"]), None))),
        );
        check_pyproject(
            "[tool.alembic]\npath_separator = \"os\"\nversion_locations = \"%(here)s/a:b\"\n",
            Ok(Some(options(None, Some(&["/srv/app/a", "b"]), None))),
        );
        check_pyproject(
            "[tool.alembic]\nscript_location = \"100%%/x\"\n",
            Ok(Some(options(Some("100%/x"), None, None))),
        );
        check_pyproject(
            "[tool.alembic]\nscript_location = \"%(root)s/x\"\n",
            Err(
                "script_location = \"%(root)s/x\" in [tool.alembic]: only %(here)s can be \
                 substituted there (write %% for a literal %)",
            ),
        );
        check_pyproject(
            "[tool.alembic]\nscript_location = 3\n",
            Err("script_location in [tool.alembic] must be a string"),
        );
        check_pyproject(
            "[tool.alembic]\nversion_locations = [1]\n",
            Err("version_locations in [tool.alembic] must be a list of strings"),
        );
        check_pyproject(
            "[tool.alembic]\nrecursive_version_locations = \"true\"\n",
            Err("recursive_version_locations in [tool.alembic] must be true or false"),
        );
        check_pyproject(
            "[tool]\nalembic = 1\n",
            Err("[tool.alembic] is not a table"),
        );
        let bad = pyproject_options("[project]\nname = \"x\"\n\n[tool.alembic\n", "/h");
        assert!(
            matches!(&bad, Err(e) if e.starts_with("not valid TOML: line 4: ")),
            "{bad:?}"
        );
        assert_eq!(
            from_pyproject(PYPROJECT, "/p"),
            Ok(Some(settings("/p/alembic", None, false)))
        );
        assert_eq!(
            from_pyproject("[tool.alembic]\nrecursive_version_locations = true\n", "/p"),
            Ok(None)
        );
    }

    #[test]
    fn ini_options_come_before_pyproject_options() {
        let ini = options(Some("ini"), None, None);
        let toml = options(Some("toml"), Some(&["v"]), Some(true));
        assert_eq!(
            ini.clone().or(toml.clone()).settings(),
            Some(settings("ini", Some(&["v"]), true))
        );
        assert_eq!(
            Options::default().or(toml).settings(),
            Some(settings("toml", Some(&["v"]), true))
        );
        assert_eq!(
            ini.or(Options::default()).settings(),
            Some(settings("ini", None, false))
        );
        assert_eq!(Options::default().settings(), None);
    }

    fn check_dirs(settings: Settings, expected: Result<&[&str], &str>) {
        assert_eq!(
            version_dirs(&settings),
            expected
                .map(|d| d.iter().map(ToString::to_string).collect())
                .map_err(ToString::to_string),
            "{settings:?}"
        );
    }

    #[test]
    fn version_directories() {
        check_dirs(settings("alembic", None, false), Ok(&["alembic/versions"]));
        check_dirs(
            settings("/srv/app/alembic/", None, false),
            Ok(&["/srv/app/alembic/versions"]),
        );
        check_dirs(
            settings("alembic", Some(&["a", "/b"]), false),
            Ok(&["a", "/b"]),
        );
        // Only the paths used are checked: a package script_location with filesystem versions.
        check_dirs(
            settings("myapp:migrations", Some(&["/srv/v"]), false),
            Ok(&["/srv/v"]),
        );
        check_dirs(
            settings("myapp:migrations", None, false),
            Err(
                "script_location myapp:migrations is a Python package location, which startgate \
                 cannot resolve without Python: use a filesystem path (such as %(here)s/…), or \
                 set STARTGATE_ALEMBIC=off",
            ),
        );
        check_dirs(
            settings("alembic", Some(&["/srv/v", "myapp:versions"]), false),
            Err(
                "version_locations entry myapp:versions is a Python package location, which \
                 startgate cannot resolve without Python: use a filesystem path (such as \
                 %(here)s/…), or set STARTGATE_ALEMBIC=off",
            ),
        );
        check_dirs(settings("", None, false), Err("script_location is empty"));
    }
}
