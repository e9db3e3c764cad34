//! A real Alembic for the tests: a Python virtual environment with pinned releases of Alembic,
//! SQLAlchemy and psycopg2, and a builder for Alembic projects laid out as `alembic init` makes
//! them (an `alembic.ini` or a `pyproject.toml`, `migrations/env.py`, `script.py.mako` and
//! `versions/`), with revision files in the style of Alembic's own template.
//!
//! The virtual environment is made once under the target directory and reused by every later
//! test run and by the test processes that run at the same time: it is built in a sibling
//! directory of its own and renamed into place when complete, so a half-made one is never used.
//! Making it needs `python3` with the `venv` module and pip, and PyPI (or the index that
//! `PIP_INDEX_URL` names); without them the tests fail with a message saying what to install:
//! they are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Output, run_bounded, try_run_bounded};

/// The pinned releases (all install as wheels on CPython 3.11).
pub const ALEMBIC: &str = "1.20.1";
pub const SQLALCHEMY: &str = "2.1.9";
pub const PSYCOPG2_BINARY: &str = "2.9.13";

/// How long one `alembic` command may take.
pub const ALEMBIC_LIMIT: Duration = Duration::from_secs(60);
const VENV_LIMIT: Duration = Duration::from_secs(120);
const PIP_LIMIT: Duration = Duration::from_secs(300);

const HOW_TO_GET_PYTHON: &str = "the Alembic tests need python3 with the venv module and pip \
    (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip; macOS: brew install python)";

/// The virtual environment with the pinned Alembic, made on first use (see the module doc).
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(make_venv).clone()
}

/// The real `alembic` console script of [`venv`].
pub fn alembic() -> PathBuf {
    venv().join("bin").join("alembic")
}

/// The directory that holds the virtual environments: cargo's `CARGO_TARGET_TMPDIR`, or else
/// the target directory above this test binary (`target/<profile>/deps/<binary>`).
fn cache_dir() -> PathBuf {
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// `python3`'s version (`3.11.7`): part of the key, since a venv links to its interpreter.
fn python_version() -> String {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; print('.'.join(map(str, sys.version_info[:3])))",
    ]);
    match try_run_bounded(cmd, VENV_LIMIT) {
        Ok(out) if out.code == 0 && !out.stdout.trim().is_empty() => out.stdout.trim().to_string(),
        Ok(out) => panic!(
            "python3 did not tell its version (exit {}): {}\n{HOW_TO_GET_PYTHON}",
            out.code, out.stderr
        ),
        Err(e) => panic!("{e}\n{HOW_TO_GET_PYTHON}"),
    }
}

/// Whether `dir` holds a complete virtual environment whose interpreter still exists.
fn usable(dir: &Path) -> bool {
    dir.join("bin/alembic").is_file() && dir.join("bin/python").exists()
}

fn make_venv() -> PathBuf {
    let base = cache_dir();
    std::fs::create_dir_all(&base)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", base.display()));
    let key = format!(
        "py{}-alembic{ALEMBIC}-sqlalchemy{SQLALCHEMY}-psycopg2binary{PSYCOPG2_BINARY}",
        python_version()
    );
    let name = format!("alembic-venv-{key}");
    let dir = base.join(&name);
    if usable(&dir) {
        return dir;
    }
    remove_stale_partials(&base);
    if dir.exists() {
        // Left by an interpreter that is gone (a venv links to it): make it anew.
        let _ = std::fs::remove_dir_all(&dir);
    }

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let partial = base.join(format!("{name}.partial-{}-{nanos}", std::process::id()));
    build_venv(&partial);
    // The console scripts name their interpreter by absolute path: point them at the final
    // place before moving there.
    relocate_scripts(&partial, &dir);

    match std::fs::rename(&partial, &dir) {
        Ok(()) => {}
        Err(_) if usable(&dir) => {
            // Another test process got there first: use its venv.
            let _ = std::fs::remove_dir_all(&partial);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            panic!(
                "cannot move the new virtual environment into {}: {e}",
                dir.display()
            );
        }
    }
    let mut check = Command::new(dir.join("bin/alembic"));
    check.arg("--version");
    match try_run_bounded(check, VENV_LIMIT) {
        Ok(out) if out.code == 0 && out.stdout.contains(ALEMBIC) => dir,
        Ok(out) => panic!(
            "the virtual environment in {} has no working alembic {ALEMBIC} (exit {}): {}{}\n\
             remove that directory and run the tests again",
            dir.display(),
            out.code,
            out.stdout,
            out.stderr
        ),
        Err(e) => panic!("{e}\nremove {} and run the tests again", dir.display()),
    }
}

/// `python3 -m venv DIR` and the pinned packages into it; panics saying what to do on failure.
fn build_venv(dir: &Path) {
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    let out = try_run_bounded(venv, VENV_LIMIT).unwrap_or_else(|e| {
        let _ = std::fs::remove_dir_all(dir);
        panic!("python3 -m venv: {e}\n{HOW_TO_GET_PYTHON}")
    });
    if out.code != 0 {
        let _ = std::fs::remove_dir_all(dir);
        panic!(
            "python3 -m venv {} failed (exit {}): {}{}\n{HOW_TO_GET_PYTHON}",
            dir.display(),
            out.code,
            out.stdout,
            out.stderr
        );
    }

    let mut pip = Command::new(dir.join("bin/pip"));
    pip.args([
        "install",
        "--disable-pip-version-check",
        "-q",
        // No .pyc files now: they would name the temporary directory in tracebacks. Python
        // writes them at the first import instead.
        "--no-compile",
    ])
    .arg(format!("alembic=={ALEMBIC}"))
    .arg(format!("SQLAlchemy=={SQLALCHEMY}"))
    .arg(format!("psycopg2-binary=={PSYCOPG2_BINARY}"));
    let result = try_run_bounded(pip, PIP_LIMIT);
    let failure = match result {
        Ok(out) if out.code == 0 => None,
        Ok(out) => Some(format!("exit {}: {}{}", out.code, out.stdout, out.stderr)),
        Err(e) => Some(e),
    };
    if let Some(failure) = failure {
        let _ = std::fs::remove_dir_all(dir);
        panic!(
            "pip could not install alembic=={ALEMBIC} SQLAlchemy=={SQLALCHEMY} \
             psycopg2-binary=={PSYCOPG2_BINARY} into a new virtual environment: {failure}\n\
             the Alembic tests need PyPI (or an index named by PIP_INDEX_URL) and {}",
            HOW_TO_GET_PYTHON.trim_start_matches("the Alembic tests need ")
        );
    }
}

/// Rewrites the absolute path `from` to `to` in the text files of `from/bin` (the console
/// scripts' `#!` lines and the activate scripts).
fn relocate_scripts(from: &Path, to: &Path) {
    let (old, new) = (
        from.as_os_str().as_encoded_bytes(),
        to.as_os_str().as_encoded_bytes(),
    );
    let bin = from.join("bin");
    let entries =
        std::fs::read_dir(&bin).unwrap_or_else(|e| panic!("cannot list {}: {e}", bin.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue; // the interpreter links
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.contains(&0) || memchr::memmem::find(&bytes, old).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(at) = memchr::memmem::find(rest, old) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(new);
            rest = &rest[at + old.len()..];
        }
        out.extend_from_slice(rest);
        std::fs::write(&path, out)
            .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
    }
}

/// Removes the partial virtual environments of test processes that are gone.
fn remove_stale_partials(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("alembic-venv-")
            .and_then(|rest| rest.split_once(".partial-"))
            .and_then(|(_, rest)| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// How a [`Project`] is configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `[tool.alembic]` in `pyproject.toml` (`alembic init --template pyproject`) instead of
    /// the `[alembic]` section of `alembic.ini`.
    pub pyproject: bool,
    /// `transaction_per_migration=True` in `env.py` unless `ALEMBIC_TPM` says otherwise.
    pub transaction_per_migration: bool,
}

/// An Alembic project in a temporary directory of its own, removed when dropped.
///
/// Its `env.py` (online mode only) reads the database URL from `DATABASE_URL`, turning a
/// `postgres://` or `postgresql://` scheme into `postgresql+psycopg2://`, and connects with
/// `NullPool`. Two more variables, read by `env.py` at each run, change its `context.configure`:
/// `ALEMBIC_TPM=1` (or `0`) for `transaction_per_migration`, and `ALEMBIC_VERSION_TABLE` (and
/// `ALEMBIC_VERSION_TABLE_SCHEMA`) for the version table.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Default for Project {
    fn default() -> Self {
        Project::new()
    }
}

impl Project {
    /// A project configured by `alembic.ini`, as `alembic init migrations` makes it.
    pub fn new() -> Project {
        Project::with_options(Options::default())
    }

    /// A project configured by `[tool.alembic]` in `pyproject.toml`, as
    /// `alembic init --template pyproject migrations` makes it: `alembic.ini` is still there,
    /// but only for logging (and the placeholder `sqlalchemy.url`).
    pub fn with_pyproject() -> Project {
        Project::with_options(Options {
            pyproject: true,
            ..Options::default()
        })
    }

    pub fn with_options(options: Options) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("startgate-alembic-project-")
            .tempdir()
            .expect("a temporary directory");
        let project = Project { dir };
        if options.pyproject {
            project.write_file("pyproject.toml", PYPROJECT_TOML);
            project.write_file(
                "alembic.ini",
                &format!("{PYPROJECT_ALEMBIC_INI_HEAD}{LOGGING_INI}"),
            );
        } else {
            project.write_file("alembic.ini", &format!("{ALEMBIC_INI_HEAD}{LOGGING_INI}"));
        }
        let tpm = if options.transaction_per_migration {
            "1"
        } else {
            "0"
        };
        project.write_file("migrations/env.py", &ENV_PY.replace("@TPM@", tpm));
        project.write_file("migrations/script.py.mako", SCRIPT_PY_MAKO);
        project.write_file(
            "migrations/README",
            "Generic single-database configuration.\n",
        );
        std::fs::create_dir_all(project.path().join("migrations/versions"))
            .expect("create migrations/versions");
        project
    }

    /// The project's directory (where `alembic` runs).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `relative` (under the project directory), creating directories.
    pub fn write_file(&self, relative: &str, contents: &str) -> &Self {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self
    }

    /// Writes revision `id` revising `down` (none: a root; two or more: a merge), whose
    /// `upgrade()` runs `upgrade_python` (Python statements, e.g. `op.execute("…")`; common
    /// indentation is removed; empty: `pass`).
    pub fn revision(&self, id: &str, down: &[&str], upgrade_python: &str) -> &Self {
        self.revision_full(id, down, None, &format!("revision {id}"), upgrade_python)
    }

    /// [`Project::revision`] with `branch_labels = ('label',)`.
    pub fn revision_with_label(
        &self,
        id: &str,
        down: &[&str],
        label: &str,
        upgrade_python: &str,
    ) -> &Self {
        self.revision_full(
            id,
            down,
            Some(label),
            &format!("revision {id}"),
            upgrade_python,
        )
    }

    /// Writes `migrations/versions/<id>_<slug of message>.py` as Alembic 1.13+'s
    /// `script.py.mako` renders it.
    pub fn revision_full(
        &self,
        id: &str,
        down: &[&str],
        label: Option<&str>,
        message: &str,
        upgrade_python: &str,
    ) -> &Self {
        let down_revision = match down {
            [] => "None".to_string(),
            [one] => py_str(one),
            many => format!(
                "({})",
                many.iter()
                    .map(|d| py_str(d))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let branch_labels = label.map_or("None".to_string(), |l| format!("({},)", py_str(l)));
        let source = format!(
            r#""""{message}

Revision ID: {id}
Revises: {revises}
Create Date: 2025-06-02 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = {revision}
down_revision: Union[str, Sequence[str], None] = {down_revision}
branch_labels: Union[str, Sequence[str], None] = {branch_labels}
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
{body}


def downgrade() -> None:
    """Downgrade schema."""
    pass
"#,
            revises = down.join(", "),
            revision = py_str(id),
            body = indent_body(upgrade_python),
        );
        self.write_file(
            &format!("migrations/versions/{id}_{}.py", slug(message)),
            &source,
        )
    }

    /// Five revisions, one of them a merge:
    ///
    /// ```text
    ///        ┌─ b2 (adds feature_flags.description) ─┐
    /// a1 ────┤                                        ├── d4 (merge) ── e5 (head)
    ///        └─ c3 (creates table audit) ────────────┘
    /// ```
    ///
    /// `a1` (the root) creates table `feature_flags (name text PRIMARY KEY, enabled boolean)`;
    /// `b2` and `c3` both revise `a1`; `d4` merges `(b2, c3)` and does nothing else; `e5`
    /// inserts the flag `new_checkout` (enabled, described as `added by e5`) and an `audit`
    /// row `e5`, so it needs both branches. Upgraded to `heads`, `alembic_version` holds `e5`.
    pub fn five_with_merge(&self) -> &Self {
        self.revision_full(
            "a1",
            &[],
            None,
            "create feature_flags",
            r#"op.execute("CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL DEFAULT false)")"#,
        )
        .revision_full(
            "b2",
            &["a1"],
            None,
            "add feature_flags.description",
            r#"op.execute("ALTER TABLE feature_flags ADD COLUMN description text")"#,
        )
        .revision_full(
            "c3",
            &["a1"],
            None,
            "create audit",
            r#"op.execute("CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), what text NOT NULL)")"#,
        )
        .revision_full("d4", &["b2", "c3"], None, "merge b2 and c3", "")
        .revision_full(
            "e5",
            &["d4"],
            None,
            "enable new_checkout",
            r#"
            op.execute(
                "INSERT INTO feature_flags (name, enabled, description) "
                "VALUES ('new_checkout', true, 'added by e5')"
            )
            op.execute("INSERT INTO audit (what) VALUES ('e5')")
            "#,
        )
    }
}

/// Runs the real `alembic ARGS` from [`venv`] in the project's directory with `DATABASE_URL`
/// set (and otherwise only PATH, HOME and LANG), bounded by [`ALEMBIC_LIMIT`].
pub fn run_alembic(project: &Project, db_url: &str, args: &[&str]) -> Output {
    run_alembic_with(project, db_url, args, &[])
}

/// [`run_alembic`] with more variables (`ALEMBIC_TPM`, `ALEMBIC_VERSION_TABLE`, …).
pub fn run_alembic_with(
    project: &Project,
    db_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(alembic());
    cmd.args(args).current_dir(project.path()).env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("DATABASE_URL", db_url);
    cmd.envs(env.iter().copied());
    run_bounded(cmd, ALEMBIC_LIMIT)
}

/// A Python string literal, as `repr` writes a simple one.
fn py_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Alembic's file-name slug of a message: its words joined by `_`, lower case, at most 40
/// characters.
fn slug(message: &str) -> String {
    let words: Vec<String> = message
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.join("_").chars().take(40).collect()
}

/// `body` with its common indentation removed and four spaces added; `pass` when empty.
fn indent_body(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let common = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min();
    let Some(common) = common else {
        return "    pass".to_string();
    };
    let first = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let last = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(0);
    lines[first..=last]
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("    {}", &l[common..])
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The logging part of Alembic's `alembic.ini` templates: Alembic logs INFO to stderr.
const LOGGING_INI: &str = "\
# Logging configuration
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
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
";

/// The `[alembic]` section of the generic template's `alembic.ini` (comments shortened); the
/// file ends with [`LOGGING_INI`].
const ALEMBIC_INI_HEAD: &str = "\
# A generic, single database configuration.

[alembic]
# path to migration scripts, relative to the token %(here)s: the location of this file
script_location = %(here)s/migrations

# sys.path path, will be prepended to sys.path if present.
prepend_sys_path = .

# the character that splits lists of paths (version_locations, prepend_sys_path):
# \"os\" is os.pathsep, the default of new projects (Alembic 1.16+)
path_separator = os

# database URL: consumed by env.py only, which reads DATABASE_URL instead.
sqlalchemy.url = driver://user:pass@localhost/dbname


";

/// `pyproject.toml` of the pyproject template, in an app's own `pyproject.toml`.
const PYPROJECT_TOML: &str = r#"[project]
name = "app"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["alembic", "SQLAlchemy", "psycopg2-binary"]

[tool.alembic]

# path to migration scripts.
# this is typically a path given in POSIX (e.g. forward slashes)
# format, relative to the token %(here)s which refers to the location of this
# ini file
script_location = "%(here)s/migrations"

# additional paths to be prepended to sys.path. defaults to the current working directory.
prepend_sys_path = [
    "."
]
"#;

/// The `[alembic]` section of the pyproject template's `alembic.ini`: the placeholder URL
/// only; the file ends with [`LOGGING_INI`].
const PYPROJECT_ALEMBIC_INI_HEAD: &str = "\
# A generic, single database configuration.

[alembic]

# database URL.  This is consumed by the user-maintained env.py script only.
# other means of configuring database URLs may be customized within the env.py
# file.
sqlalchemy.url = driver://user:pass@localhost/dbname


";

/// `env.py`: the generic template's online mode, with the URL and options from the
/// environment. `@TPM@` is the default of `ALEMBIC_TPM`.
const ENV_PY: &str = r#"import os
from logging.config import fileConfig

from sqlalchemy import create_engine
from sqlalchemy import pool

from alembic import context

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# add your model's MetaData object here
# for 'autogenerate' support
target_metadata = None


def database_url() -> str:
    """The database URL from DATABASE_URL, for SQLAlchemy with psycopg2."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def run_migrations_online() -> None:
    """Run migrations in 'online' mode."""
    connectable = create_engine(database_url(), poolclass=pool.NullPool)

    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=os.environ.get("ALEMBIC_TPM", "@TPM@") == "1",
            version_table=os.environ.get("ALEMBIC_VERSION_TABLE") or "alembic_version",
            version_table_schema=os.environ.get("ALEMBIC_VERSION_TABLE_SCHEMA") or None,
        )

        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("this project runs migrations online only")
else:
    run_migrations_online()
"#;

/// `script.py.mako` of the generic template (Alembic 1.13+).
const SCRIPT_PY_MAKO: &str = r#""""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
"#;
