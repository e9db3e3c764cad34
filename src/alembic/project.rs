//! Finding an Alembic project and reading its revision files: the thin I/O shell around
//! [`config`](super::config) and [`parse_revision`](super::parse_revision).
//!
//! Rules, as the `alembic` command applies them (`alembic/config.py`, `CommandLine`):
//! - the ini file is `-c FILE` from the migrate command, else `$ALEMBIC_CONFIG`, else
//!   `alembic.ini`; the toml file is a `-c …/pyproject.toml`, else an `$ALEMBIC_CONFIG` naming a
//!   `pyproject.toml`, else `pyproject.toml`. Relative names are relative to the working
//!   directory, and so are relative `script_location` and `version_locations` (Alembic resolves
//!   them against the working directory, not the ini's directory); `%(here)s` is the absolute
//!   directory of the file it appears in;
//! - each option comes from the ini section first and from `[tool.alembic]` second, so an
//!   `alembic.ini` that holds only logging (Alembic 1.16's pyproject template) works;
//! - no config at all means Alembic awareness is off ([`discover`] gives `None`); a config named
//!   explicitly that is missing, or a config found without a `script_location`, is an error,
//!   as Alembic itself would fail on it;
//! - a pyproject.toml that is not valid TOML is reported only when the ini lacks a
//!   `script_location`: Alembic before 1.16 never reads it, so it cannot matter to a project
//!   whose ini is complete;
//! - revision files are the `*.py` files of each version directory (of its subdirectories too
//!   when `recursive_version_locations` is true, `__pycache__` excepted), but those whose name
//!   starts with `__init__` or `.#` (Alembic's rule), in a stable order: each directory's files
//!   sorted, then its subdirectories sorted. A file reached twice (overlapping locations, a
//!   symbolic link) is read once. Every bad file, duplicate and dangling link is reported at
//!   once;
//! - a version directory that does not exist is an error naming it. Alembic skips it silently,
//!   but here it most likely means a wrong working directory or mount, and reading no revision
//!   files would make every database revision look `future` and the upgrade be skipped.
//!
//! Not supported, and documented as such: package locations (`myapp:migrations`) and
//! `sourceless = true` projects that ship only `.pyc` files.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::config::{self, Ini};
use super::{Graph, parse_revision};

/// An Alembic project: where its revision files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The file the settings came from (alembic.ini or pyproject.toml), for messages.
    pub config: PathBuf,
    /// Every directory revision files are read from, absolute or relative to the working
    /// directory, in order.
    pub version_dirs: Vec<PathBuf>,
    /// Whether subdirectories of the version directories hold revision files too.
    pub recursive: bool,
}

/// Why the Alembic project cannot be read (a setup error: Alembic itself would fail too).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("alembic config {} ({origin}) does not exist{}", path.display(), looked_in(path, cwd))]
    MissingConfig {
        /// As the command or the variable wrote it.
        path: PathBuf,
        /// Who named it: `from -c in STARTGATE_MIGRATE_COMMAND`, `from ALEMBIC_CONFIG`.
        origin: &'static str,
        /// The working directory a relative `path` was looked for in.
        cwd: PathBuf,
    },
    #[error("cannot read alembic config {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A syntax error, a bad option value, a location startgate cannot resolve, or no
    /// `script_location`; `problem` names the key and line where there is one.
    #[error("alembic config {}: {problem}", path.display())]
    BadConfig { path: PathBuf, problem: String },
    #[error(
        "alembic version directory {} (from {}) does not exist; create it (git does not keep an \
         empty directory: add a .gitkeep) or fix script_location or version_locations",
        dir.display(),
        config.display()
    )]
    MissingVersionDir { dir: PathBuf, config: PathBuf },
    #[error("alembic version directory {} (from {}) is not a directory", dir.display(), config.display())]
    NotADir { dir: PathBuf, config: PathBuf },
    #[error("cannot read alembic version directory {}", dir.display())]
    ReadVersionDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every unreadable or malformed revision file, duplicate revision and dangling link.
    #[error("{}", format_problems(.0))]
    Revisions(Vec<String>),
}

fn looked_in(path: &Path, cwd: &Path) -> String {
    if path.is_relative() {
        format!(" in {}", cwd.display())
    } else {
        String::new()
    }
}

fn format_problems(problems: &[String]) -> String {
    let mut out = match problems.len() {
        1 => "1 problem in alembic revision files:".to_string(),
        n => format!("{n} problems in alembic revision files:"),
    };
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(problem);
    }
    out
}

const FROM_COMMAND: &str = "from -c in STARTGATE_MIGRATE_COMMAND";
const FROM_ENV: &str = "from ALEMBIC_CONFIG";

/// A config file to look for, and who named it (`None`: the default name, which may be absent).
struct Candidate {
    name: String,
    origin: Option<&'static str>,
}

/// Finds the Alembic config as Alembic itself would for `command`, in DESIGN order: `-c` in the
/// command, then `alembic_config_env` (the ALEMBIC_CONFIG variable's value), then `alembic.ini`
/// in `cwd`, then `[tool.alembic]` in `cwd/pyproject.toml`. `Ok(None)` when no config is found
/// at all (no -c, no ALEMBIC_CONFIG, no alembic.ini, no `[tool.alembic]`): Alembic awareness is
/// then off. A config named explicitly (-c or ALEMBIC_CONFIG) that is missing is an error. If
/// alembic.ini exists but its section has no script_location, pyproject.toml's `[tool.alembic]`
/// gives it (Alembic 1.16 lets alembic.ini hold only logging config). Relative paths in
/// script_location and version_locations are relative to `cwd`; `%(here)s` is the config
/// file's absolute directory.
pub fn discover(
    command: &str,
    alembic_config_env: Option<&str>,
    cwd: &Path,
) -> Result<Option<Project>, ProjectError> {
    let from_command = config::config_from_command(command);
    let env = alembic_config_env.filter(|v| !v.is_empty());
    let env_is_toml = env.is_some_and(is_pyproject);
    let ini_candidate = match (&from_command.config, env) {
        (Some(name), _) => Candidate {
            name: name.clone(),
            origin: Some(FROM_COMMAND),
        },
        (None, Some(name)) if !env_is_toml => Candidate {
            name: name.to_string(),
            origin: Some(FROM_ENV),
        },
        _ => Candidate {
            name: "alembic.ini".to_string(),
            origin: None,
        },
    };
    let toml_candidate = match (&from_command.pyproject, env) {
        (Some(name), _) => Candidate {
            name: name.clone(),
            origin: Some(FROM_COMMAND),
        },
        (None, Some(name)) if env_is_toml => Candidate {
            name: name.to_string(),
            origin: Some(FROM_ENV),
        },
        _ => Candidate {
            name: "pyproject.toml".to_string(),
            origin: None,
        },
    };
    let section = from_command.name.as_deref().unwrap_or("alembic");

    // The ini file, read and parsed, with the options of its section.
    let ini = match read_candidate(&ini_candidate, cwd)? {
        None => None,
        Some((path, text)) => {
            let bad = |problem: String| ProjectError::BadConfig {
                path: path.clone(),
                problem,
            };
            let parsed: Ini =
                config::parse_ini(&text, &here(&path)).map_err(|e| bad(e.to_string()))?;
            let options = config::ini_options(&parsed, section).map_err(bad)?;
            Some((path, parsed, options))
        }
    };
    let ini_has_script = ini
        .as_ref()
        .is_some_and(|(_, _, options)| options.script_location.is_some());

    // pyproject.toml's `[tool.alembic]`, when there is one.
    let toml = match read_candidate(&toml_candidate, cwd)? {
        None => None,
        Some((path, text)) => match config::pyproject_options(&text, &here(&path)) {
            Ok(options) => options.map(|options| (path, options)),
            Err(_) if ini_has_script => None,
            Err(problem) => return Err(ProjectError::BadConfig { path, problem }),
        },
    };

    let (config_path, options) = match (ini, toml) {
        (None, None) => return Ok(None),
        (Some((path, _, ini_options)), Some((toml_path, toml_options))) => {
            let from = if ini_has_script { path } else { toml_path };
            (from, ini_options.or(toml_options))
        }
        (Some((path, _, options)), None) => (path, options),
        (None, Some((path, options))) => (path, options),
    };
    let Some(settings) = options.settings() else {
        return Err(ProjectError::BadConfig {
            problem: no_script_location(&config_path, section),
            path: config_path,
        });
    };
    let bad = |problem: String| ProjectError::BadConfig {
        path: config_path.clone(),
        problem,
    };
    let version_dirs = config::version_dirs(&settings)
        .map_err(bad)?
        .into_iter()
        .map(|dir| cwd.join(dir))
        .collect();
    Ok(Some(Project {
        config: config_path,
        version_dirs,
        recursive: settings.recursive,
    }))
}

/// The message for a config without `script_location`, which Alembic refuses too.
fn no_script_location(path: &Path, section: &str) -> String {
    if is_pyproject(&path.to_string_lossy()) {
        "no script_location in [tool.alembic]".to_string()
    } else {
        format!(
            "no script_location in [{section}] (nor in [tool.alembic] of a pyproject.toml); \
             Alembic cannot run without one"
        )
    }
}

fn is_pyproject(name: &str) -> bool {
    name.rsplit('/').next() == Some("pyproject.toml")
}

/// Reads a candidate config file: `None` when a default name is absent; an error when a name
/// given explicitly is.
fn read_candidate(
    candidate: &Candidate,
    cwd: &Path,
) -> Result<Option<(PathBuf, String)>, ProjectError> {
    let path = cwd.join(&candidate.name);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some((path, String::from_utf8_lossy(&bytes).into_owned()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match candidate.origin {
            None => Ok(None),
            Some(origin) => Err(ProjectError::MissingConfig {
                path: PathBuf::from(&candidate.name),
                origin,
                cwd: cwd.to_path_buf(),
            }),
        },
        Err(source) => Err(ProjectError::ReadConfig { path, source }),
    }
}

/// `%(here)s` for a config file: its absolute directory (Alembic's
/// `Path(file).absolute().parent`, which does not resolve symbolic links).
fn here(config: &Path) -> String {
    let absolute = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    absolute
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads every revision file of the project and builds its graph. Every unreadable or
/// malformed file, duplicate revision and dangling link is reported at once; a version
/// directory that does not exist is an error naming it.
pub fn load(project: &Project) -> Result<Graph, ProjectError> {
    let mut files = Vec::new();
    for dir in &project.version_dirs {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ProjectError::NotADir {
                    dir: dir.clone(),
                    config: project.config.clone(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProjectError::MissingVersionDir {
                    dir: dir.clone(),
                    config: project.config.clone(),
                });
            }
            Err(source) => {
                return Err(ProjectError::ReadVersionDir {
                    dir: dir.clone(),
                    source,
                });
            }
        }
        list_revision_files(dir, project.recursive, &mut files)?;
    }

    let mut seen = BTreeSet::new();
    let mut revisions = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        // Alembic skips a file it already loaded under another path.
        let real = fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if !seen.insert(real) {
            continue;
        }
        let name = file.display().to_string();
        match fs::read(&file) {
            // Revision ids and links are ASCII; a comment in another encoding must not matter.
            Ok(bytes) => match parse_revision(&name, &String::from_utf8_lossy(&bytes)) {
                Ok(revision) => revisions.push((name, revision)),
                Err(error) => problems.push(error.to_string()),
            },
            Err(error) => problems.push(format!("{name}: cannot read: {error}")),
        }
    }

    if !problems.is_empty() {
        // A link to a revision whose file is broken would be reported as dangling; check only
        // for duplicates now, and links once every file reads.
        let unlinked = revisions
            .into_iter()
            .map(|(name, mut revision)| {
                revision.down_revisions.clear();
                revision.depends_on.clear();
                (name, revision)
            })
            .collect();
        if let Err(more) = Graph::new(unlinked) {
            problems.extend(more);
        }
        return Err(ProjectError::Revisions(problems));
    }
    Graph::new(revisions).map_err(ProjectError::Revisions)
}

/// Appends the revision files of `dir` to `files`: its files sorted, then (when `recursive`)
/// each subdirectory's, sorted, as Alembic's `os.walk` with sorted names does. Symbolic links
/// to directories are not followed (`os.walk`'s default).
fn list_revision_files(
    dir: &Path,
    recursive: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), ProjectError> {
    let read_error = |source| ProjectError::ReadVersionDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let is_dir = entry.file_type().map_err(read_error)?.is_dir();
        entries.push((entry.file_name(), is_dir));
    }
    entries.sort();
    let mut subdirs = Vec::new();
    for (name, is_dir) in entries {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        if is_dir {
            if name != "__pycache__" {
                subdirs.push(path);
            }
        } else if name.ends_with(".py")
            && !name.starts_with("__init__")
            && !name.starts_with(".#")
            && !path.is_dir()
        {
            files.push(path);
        }
    }
    if recursive {
        for subdir in subdirs {
            list_revision_files(&subdir, true, files)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary working directory with files written into it.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Tree {
            let tree = Tree(tempfile::tempdir().expect("tempdir"));
            for (path, text) in files {
                tree.write(path, text);
            }
            tree
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        /// The paths of `project` relative to the tree, for comparing.
        fn relative(&self, project: &Project) -> (String, Vec<String>, bool) {
            let strip = |p: &Path| {
                p.strip_prefix(self.path())
                    .unwrap_or(p)
                    .display()
                    .to_string()
            };
            (
                strip(&project.config),
                project.version_dirs.iter().map(|d| strip(d)).collect(),
                project.recursive,
            )
        }
    }

    fn revision(id: &str, down: Option<&str>) -> String {
        let down = down.map_or("None".to_string(), |d| format!("'{d}'"));
        format!(
            "\"\"\"{id}\n\nRevision ID: {id}\n\"\"\"\nfrom alembic import op\n\n\
             revision: str = '{id}'\ndown_revision = {down}\nbranch_labels = None\n\
             depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n"
        )
    }

    const ENV_PY: &str = "from alembic import context\n";

    fn check_discover(
        files: &[(&str, &str)],
        command: &str,
        env: Option<&str>,
        expected: Option<(&str, &[&str], bool)>,
    ) {
        let tree = Tree::new(files);
        let found = discover(command, env, tree.path()).expect("discover");
        let expected = expected.map(|(config, dirs, recursive)| {
            (
                config.to_string(),
                dirs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                recursive,
            )
        });
        assert_eq!(
            found.map(|p| tree.relative(&p)),
            expected,
            "{command} {env:?}"
        );
    }

    #[test]
    fn finds_the_config_as_alembic_does() {
        let ini = "[alembic]\nscript_location = %(here)s/alembic\npath_separator = os\n";
        // alembic.ini in the working directory, %(here)s absolute.
        check_discover(
            &[("alembic.ini", ini)],
            "alembic upgrade head",
            None,
            Some(("alembic.ini", &["alembic/versions"], false)),
        );
        // A relative script_location is relative to the working directory, not the ini's.
        check_discover(
            &[("conf/alembic.ini", "[alembic]\nscript_location = db\n")],
            "alembic -c conf/alembic.ini upgrade head",
            None,
            Some(("conf/alembic.ini", &["db/versions"], false)),
        );
        check_discover(
            &[("conf/alembic.ini", ini)],
            "alembic -c conf/alembic.ini upgrade head",
            None,
            Some(("conf/alembic.ini", &["conf/alembic/versions"], false)),
        );
        // ALEMBIC_CONFIG, and -c before it.
        check_discover(
            &[
                ("deploy/alembic.ini", ini),
                ("alembic.ini", "[alembic]\nscript_location = x\n"),
            ],
            "alembic upgrade head",
            Some("deploy/alembic.ini"),
            Some(("deploy/alembic.ini", &["deploy/alembic/versions"], false)),
        );
        check_discover(
            &[
                ("deploy/alembic.ini", ini),
                ("other.ini", "[alembic]\nscript_location = x\n"),
            ],
            "alembic -c other.ini upgrade head",
            Some("deploy/alembic.ini"),
            Some(("other.ini", &["x/versions"], false)),
        );
        // -n picks the section.
        check_discover(
            &[(
                "alembic.ini",
                "[alembic]\nscript_location = a\n[db2]\nscript_location = b\n",
            )],
            "alembic -n db2 upgrade head",
            None,
            Some(("alembic.ini", &["b/versions"], false)),
        );
        // Two version locations, recursive.
        check_discover(
            &[(
                "alembic.ini",
                "[alembic]\nscript_location = alembic\npath_separator = os\n\
                 version_locations = %(here)s/core:plugins/versions\n\
                 recursive_version_locations = true\n",
            )],
            "alembic upgrade heads",
            None,
            Some(("alembic.ini", &["core", "plugins/versions"], true)),
        );
        // Nothing at all: awareness off.
        check_discover(&[], "alembic upgrade head", None, None);
        check_discover(
            &[("pyproject.toml", "[tool.black]\nline-length = 99\n")],
            "alembic upgrade head",
            None,
            None,
        );
    }

    #[test]
    fn finds_tool_alembic_in_pyproject() {
        let pyproject = "[project]\nname = \"shop\"\n\n[tool.alembic]\n\
                         script_location = \"%(here)s/migrations\"\n";
        check_discover(
            &[("pyproject.toml", pyproject)],
            "alembic upgrade head",
            None,
            Some(("pyproject.toml", &["migrations/versions"], false)),
        );
        // 1.16's pyproject template keeps an alembic.ini for logging only.
        check_discover(
            &[
                (
                    "alembic.ini",
                    "[alembic]\nsqlalchemy.url = x\n[loggers]\nkeys = root\n",
                ),
                ("pyproject.toml", pyproject),
            ],
            "alembic upgrade head",
            None,
            Some(("pyproject.toml", &["migrations/versions"], false)),
        );
        // Option by option: the ini's script_location, the toml's version_locations.
        check_discover(
            &[
                ("alembic.ini", "[alembic]\nscript_location = db\n"),
                (
                    "pyproject.toml",
                    "[tool.alembic]\nversion_locations = [\"%(here)s/v1\", \"v2\"]\n",
                ),
            ],
            "alembic upgrade head",
            None,
            Some(("alembic.ini", &["v1", "v2"], false)),
        );
        // An ALEMBIC_CONFIG naming a pyproject.toml is the toml file.
        check_discover(
            &[("app/pyproject.toml", pyproject)],
            "alembic upgrade head",
            Some("app/pyproject.toml"),
            Some(("app/pyproject.toml", &["app/migrations/versions"], false)),
        );
        // A broken pyproject.toml does not matter to a complete alembic.ini.
        check_discover(
            &[
                ("alembic.ini", "[alembic]\nscript_location = db\n"),
                ("pyproject.toml", "[tool.alembic\n"),
            ],
            "alembic upgrade head",
            None,
            Some(("alembic.ini", &["db/versions"], false)),
        );
    }

    fn check_discover_error(
        files: &[(&str, &str)],
        command: &str,
        env: Option<&str>,
        expected: &str,
    ) {
        let tree = Tree::new(files);
        let error = discover(command, env, tree.path()).expect_err("an error");
        let root = tree.path().display().to_string();
        assert_eq!(
            error.to_string().replace(&root, "<cwd>"),
            expected,
            "{command} {env:?}"
        );
    }

    #[test]
    fn refuses_configs_alembic_would_refuse() {
        check_discover_error(
            &[],
            "alembic -c conf/alembic.ini upgrade head",
            None,
            "alembic config conf/alembic.ini (from -c in STARTGATE_MIGRATE_COMMAND) does not \
             exist in <cwd>",
        );
        check_discover_error(
            &[("alembic.ini", "[alembic]\nscript_location = a\n")],
            "alembic upgrade head",
            Some("/nowhere/alembic.ini"),
            "alembic config /nowhere/alembic.ini (from ALEMBIC_CONFIG) does not exist",
        );
        check_discover_error(
            &[],
            "alembic -c pyproject.toml upgrade head",
            None,
            "alembic config pyproject.toml (from -c in STARTGATE_MIGRATE_COMMAND) does not exist \
             in <cwd>",
        );
        check_discover_error(
            &[("alembic.ini", "[alembic]\nscript_location = %(root)s/a\n")],
            "alembic upgrade head",
            None,
            "alembic config <cwd>/alembic.ini: line 2: script_location = %(root)s/a: %(root)s \
             is not a key of [alembic] or [DEFAULT]",
        );
        check_discover_error(
            &[("alembic.ini", "[alembic]\nscript_location = a\n")],
            "alembic -n staging upgrade head",
            None,
            "alembic config <cwd>/alembic.ini: no script_location in [staging] (nor in \
             [tool.alembic] of a pyproject.toml); Alembic cannot run without one",
        );
        check_discover_error(
            &[(
                "pyproject.toml",
                "[tool.alembic]\nrecursive_version_locations = true\n",
            )],
            "alembic upgrade head",
            None,
            "alembic config <cwd>/pyproject.toml: no script_location in [tool.alembic]",
        );
        check_discover_error(
            &[
                ("alembic.ini", "[alembic]\nsqlalchemy.url = x\n"),
                ("pyproject.toml", "[tool.alembic\n"),
            ],
            "alembic upgrade head",
            None,
            "alembic config <cwd>/pyproject.toml: not valid TOML: line 1: unclosed table, \
             expected `]`",
        );
        check_discover_error(
            &[(
                "alembic.ini",
                "[alembic]\nscript_location = myapp:migrations\n",
            )],
            "alembic upgrade head",
            None,
            "alembic config <cwd>/alembic.ini: script_location myapp:migrations is a Python \
             package location, which startgate cannot resolve without Python: use a filesystem \
             path (such as %(here)s/…), or set STARTGATE_ALEMBIC=off",
        );
    }

    fn project(tree: &Tree, dirs: &[&str], recursive: bool) -> Project {
        Project {
            config: tree.path().join("alembic.ini"),
            version_dirs: dirs.iter().map(|d| tree.path().join(d)).collect(),
            recursive,
        }
    }

    #[test]
    fn loads_every_revision_file() {
        let tree = Tree::new(&[
            (
                "alembic/versions/1975ea83b712_init.py",
                &revision("1975ea83b712", None),
            ),
            (
                "alembic/versions/3f2a_flags.py",
                &revision("3f2a", Some("1975ea83b712")),
            ),
            ("alembic/versions/__init__.py", "revision = broken("),
            ("alembic/versions/.#3f2a_flags.py", "an editor's lock file"),
            ("alembic/versions/README", "not python"),
            ("alembic/versions/__pycache__/x.py", "revision = broken("),
            (
                "alembic/versions/2025/a1_sub.py",
                &revision("a1", Some("3f2a")),
            ),
            ("plugins/b2.py", &revision("b2", Some("1975ea83b712"))),
        ]);
        // Not recursive: the subdirectory is not read.
        let flat = load(&project(&tree, &["alembic/versions"], false)).expect("graph");
        assert_eq!(flat.len(), 2);
        assert_eq!(flat.heads(), BTreeSet::from(["3f2a".to_string()]));
        let deep = load(&project(&tree, &["alembic/versions"], true)).expect("graph");
        assert_eq!(deep.heads(), BTreeSet::from(["a1".to_string()]));
        // Two locations, one of them reached twice.
        let both = load(&project(
            &tree,
            &["alembic/versions", "plugins", "alembic/versions/2025"],
            true,
        ))
        .expect("graph");
        assert_eq!(both.len(), 4);
        assert_eq!(
            both.heads(),
            BTreeSet::from(["a1".to_string(), "b2".to_string()])
        );
        // An empty version directory is an empty project.
        tree.write("empty/.gitkeep", "");
        assert!(
            load(&project(&tree, &["empty"], false))
                .expect("graph")
                .is_empty()
        );
    }

    #[test]
    fn reports_every_bad_revision_file_at_once() {
        let tree = Tree::new(&[
            ("v/a.py", &revision("a", None)),
            ("v/b.py", &revision("b", Some("a"))),
            ("v/b_again.py", &revision("b", Some("a"))),
            ("v/c.py", "revision = 'c'\ndown_revision = compute()\n"),
            ("v/d.py", &revision("d", Some("c"))),
        ]);
        let root = tree.path().display().to_string();
        let error = load(&project(&tree, &["v"], false)).expect_err("problems");
        assert_eq!(
            error.to_string().replace(&root, "<cwd>"),
            "2 problems in alembic revision files:\n  \
             - <cwd>/v/c.py: down_revision = compute(): expected None, a string, or a tuple or \
             list of strings\n  \
             - revision b is defined twice: <cwd>/v/b.py and <cwd>/v/b_again.py"
        );
        // Once every file reads, dangling links are reported too.
        tree.write("v/c.py", &revision("c", Some("zz")));
        let error = load(&project(&tree, &["v"], false)).expect_err("problems");
        assert_eq!(
            error.to_string().replace(&root, "<cwd>"),
            "2 problems in alembic revision files:\n  \
             - revision b is defined twice: <cwd>/v/b.py and <cwd>/v/b_again.py\n  \
             - <cwd>/v/c.py: revision c points to zz, which no revision file defines"
        );
    }

    #[test]
    fn a_missing_version_directory_is_named() {
        let tree = Tree::new(&[("alembic/env.py", ENV_PY)]);
        let root = tree.path().display().to_string();
        let error = load(&project(&tree, &["alembic/versions"], false)).expect_err("missing");
        assert_eq!(
            error.to_string().replace(&root, "<cwd>"),
            "alembic version directory <cwd>/alembic/versions (from <cwd>/alembic.ini) does not \
             exist; create it (git does not keep an empty directory: add a .gitkeep) or fix \
             script_location or version_locations"
        );
        let error = load(&project(&tree, &["alembic/env.py"], false)).expect_err("not a dir");
        assert_eq!(
            error.to_string().replace(&root, "<cwd>"),
            "alembic version directory <cwd>/alembic/env.py (from <cwd>/alembic.ini) is not a \
             directory"
        );
    }

    #[test]
    fn discover_then_load() {
        let tree = Tree::new(&[
            (
                "alembic.ini",
                "[alembic]\nscript_location = %(here)s/alembic\npath_separator = os\n",
            ),
            ("alembic/env.py", ENV_PY),
            ("alembic/versions/a.py", &revision("a", None)),
        ]);
        let found = discover("alembic upgrade head", None, tree.path())
            .expect("discover")
            .expect("a project");
        assert_eq!(load(&found).expect("graph").len(), 1);
    }
}
