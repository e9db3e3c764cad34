//! The Python wheel (`pyproject.toml`, maturin with `bindings = "bin"`): built from this checkout
//! the way pip builds it, installed into a fresh virtual environment, and run from there, as a
//! Python app on Render's native runtime gets it.
//!
//! Steps, each bounded: a fresh virtual environment with a pinned maturin from PyPI (a wheel,
//! never compiled); `pip wheel --no-build-isolation` of the repository, which goes through the
//! PEP 517 hooks that `[build-system]` names (so a wrong backend or version bound fails here as
//! it would for `pip install git+…`); a second fresh virtual environment that installs only that
//! wheel, offline; then its `bin/startgate --version` and the installed distribution's version.
//!
//! Build time: the release profile (fat LTO, one codegen unit) takes about two minutes, which
//! buys nothing here: packaging does not depend on the profile. So the test asks maturin for the
//! `dev` profile without debug information (`MATURIN_PEP517_ARGS=--profile dev`,
//! `CARGO_PROFILE_DEV_DEBUG=0`), and builds in a target directory of its own under
//! `CARGO_TARGET_TMPDIR`, so it never waits for the main build's lock and its artifacts are
//! kept for the next run. Measured on two cores: 50–90 s the first time (every dependency),
//! about 8 s when nothing changed, 20–30 s after a change to `src/`. Published wheels are built
//! with the release profile (docs/deploy.md).
//!
//! Needs `python3` with `venv` and pip, PyPI (or the index `PIP_INDEX_URL` names) and `cargo`;
//! without them the test fails with a message saying what to install: it is never skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Output, try_run_bounded};

/// The maturin the test builds with (inside `pyproject.toml`'s `maturin>=1.7,<2.0`).
const MATURIN: &str = "1.16.0";

const VENV_LIMIT: Duration = Duration::from_secs(120);
const PIP_LIMIT: Duration = Duration::from_secs(300);
/// A first build compiles every dependency (about 90 s on two cores); a slow or busy machine
/// gets ten times that.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
const RUN_LIMIT: Duration = Duration::from_secs(30);

const HOW_TO_GET_PYTHON: &str = "the wheel test needs python3 with the venv module and pip \
    (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip; macOS: brew install \
    python), PyPI (or an index named by PIP_INDEX_URL) for maturin, and cargo on PATH";

#[test]
fn the_wheel_installs_a_startgate_that_runs() {
    let started = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    let scratch = tempfile::Builder::new()
        .prefix("startgate-wheel-")
        .tempdir()
        .expect("a temporary directory");

    // 1. A fresh virtual environment with the pinned maturin.
    let builder = scratch.path().join("build-venv");
    make_venv(&builder);
    let mut pip = venv_command(&builder, "pip");
    pip.args(["install", "--disable-pip-version-check", "-q"])
        // A wheel only: maturin's sdist would compile maturin itself.
        .arg("--only-binary=:all:")
        .arg(format!("maturin=={MATURIN}"));
    check(
        step("pip install maturin", pip, PIP_LIMIT),
        "pip install maturin",
    );
    eprintln!("maturin {MATURIN} installed after {:?}", started.elapsed());

    // 2. The wheel, through pyproject.toml's build backend.
    let wheels = scratch.path().join("wheels");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheel-target");
    let mut wheel = venv_command(&builder, "pip");
    wheel
        .args(["wheel", "--disable-pip-version-check", "-q"])
        .args([
            "--no-deps",
            "--no-build-isolation",
            "--check-build-dependencies",
        ])
        .arg("--wheel-dir")
        .arg(&wheels)
        .arg(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", &target)
        .env("MATURIN_PEP517_ARGS", "--profile dev")
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    let build_started = Instant::now();
    check(step("pip wheel .", wheel, BUILD_LIMIT), "pip wheel .");
    eprintln!("wheel built in {:?}", build_started.elapsed());

    let built: Vec<PathBuf> = std::fs::read_dir(&wheels)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", wheels.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    let [wheel_file] = built.as_slice() else {
        panic!("pip wheel should leave exactly one wheel, found {built:?}");
    };
    let name = wheel_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    // A binary wheel: any Python 3, no ABI, one platform.
    assert!(
        name.starts_with(&format!("startgate-{version}-py3-none-")) && name.ends_with(".whl"),
        "unexpected wheel name {name}"
    );

    // 3. Another fresh virtual environment with nothing but the wheel, installed offline.
    let app = scratch.path().join("app-venv");
    make_venv(&app);
    let mut install = venv_command(&app, "pip");
    install
        .args(["install", "--disable-pip-version-check", "-q"])
        .args(["--no-index", "--no-deps"])
        .arg(wheel_file);
    check(
        step("pip install the wheel", install, PIP_LIMIT),
        "pip install the wheel",
    );

    // 4. The installed binary runs and says its version.
    let installed = app.join("bin").join("startgate");
    assert!(
        installed.is_file(),
        "the wheel did not install {}",
        installed.display()
    );
    let out = step(
        "startgate --version",
        {
            let mut cmd = Command::new(&installed);
            cmd.arg("--version");
            cmd
        },
        RUN_LIMIT,
    );
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, format!("startgate {version}").as_str()),
        "stderr: {}",
        out.stderr
    );
    // The distribution's version is Cargo's (`dynamic = ["version"]`).
    let mut metadata = venv_command(&app, "python");
    metadata.args([
        "-c",
        "import importlib.metadata as m; print(m.version('startgate'))",
    ]);
    let out = check(
        step("importlib.metadata", metadata, RUN_LIMIT),
        "importlib.metadata",
    );
    assert_eq!(out.stdout.trim(), version);

    eprintln!("the wheel test took {:?}", started.elapsed());
}

/// `python3 -m venv DIR`; panics saying what to install when that fails.
fn make_venv(dir: &Path) {
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    check(step("python3 -m venv", venv, VENV_LIMIT), "python3 -m venv");
}

/// A command that runs `program` from the virtual environment `venv`, with that environment's
/// `bin` first on PATH (maturin's build hooks run `maturin` from PATH).
fn venv_command(venv: &Path, program: &str) -> Command {
    let bin = venv.join("bin");
    let mut cmd = Command::new(bin.join(program));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin).chain(std::env::split_paths(&path));
    cmd.env(
        "PATH",
        std::env::join_paths(paths).expect("PATH entries without separators"),
    );
    cmd.env("VIRTUAL_ENV", venv);
    cmd
}

/// Runs one step within `limit`; panics with instructions when it cannot start or runs too long.
fn step(what: &str, cmd: Command, limit: Duration) -> Output {
    try_run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{what}: {e}\n{HOW_TO_GET_PYTHON}"))
}

/// `out`, when it exited 0; otherwise panics with its output and instructions.
fn check(out: Output, what: &str) -> Output {
    if out.code != 0 {
        panic!(
            "{what} failed (exit {}):\n{}{}\n{HOW_TO_GET_PYTHON}",
            out.code, out.stdout, out.stderr
        );
    }
    out
}
