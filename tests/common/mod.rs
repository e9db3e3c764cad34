//! Test harness shared by the integration tests: a real PostgreSQL, a fresh database per test,
//! and a way to run the real `startgate` binary with a bounded wait.
//!
//! PostgreSQL comes from `STARTGATE_TEST_DATABASE_URL` when it is set (CI points it at the
//! machine's server). Otherwise the harness starts a private throwaway cluster from the local
//! server binaries (`initdb`, `postgres`) in a temporary directory on a free port, as the
//! `postgres` user when the tests run as root. The postmaster is started by a thread that lives
//! as long as the test process and gets a parent-death signal (SIGQUIT: immediate shutdown), so
//! it never outlives the tests; directories left by earlier runs are removed at the next start.
//! When neither is possible the tests fail with a message saying how to get PostgreSQL: they
//! are never skipped.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod alembic;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};

/// The server every test of this process uses.
pub struct Server {
    /// A URL to an existing database on the server, for creating and dropping test databases.
    admin_url: url::Url,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

const HOW_TO_GET_POSTGRES: &str = "these tests need a real PostgreSQL. Either set \
    STARTGATE_TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB (a role that may CREATE DATABASE), \
    or install the server binaries so that the tests can start a private cluster \
    (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)";

/// The shared server, started on first use. Panics (failing the test) with instructions when
/// PostgreSQL cannot be had.
pub fn server() -> &'static Server {
    match SERVER.get_or_init(start_server) {
        Ok(server) => server,
        Err(e) => panic!("{e}\n{HOW_TO_GET_POSTGRES}"),
    }
}

fn start_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("STARTGATE_TEST_DATABASE_URL") {
        let admin_url = url::Url::parse(&url)
            .map_err(|e| format!("STARTGATE_TEST_DATABASE_URL is not a URL: {e}"))?;
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin_url.as_str()).await?;
            sqlx::raw_sql("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        })
        .map_err(|e| format!("cannot connect to STARTGATE_TEST_DATABASE_URL: {e}"))?;
        return Ok(Server { admin_url });
    }
    start_private_cluster()
}

/// Runs a future to completion on a private current-thread runtime; panics, naming `what`,
/// if it takes longer than `limit`.
pub fn run_within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        match tokio::time::timeout(limit, f).await {
            Ok(out) => out,
            Err(_) => panic!("{what} did not finish within {limit:?}"),
        }
    })
}

/// Runs a future to completion on a private current-thread runtime, bounded by 60 s.
pub fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(sqlx::Error::Io)?;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
    })
}

fn find_server_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    }) {
        return Ok(dir);
    }
    // Debian keeps the server binaries out of PATH.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|d| d.join("initdb").is_file());
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .ok_or_else(|| "no STARTGATE_TEST_DATABASE_URL, and no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql".to_string())
}

/// The uid and gid to run the cluster as: ours, or `postgres`'s when we are root (initdb refuses
/// to run as root).
fn cluster_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").map_err(|e| e.to_string())?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the ids at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(
            "running as root, and there is no `postgres` user to run a private cluster as"
                .to_string(),
        );
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn remove_stale_clusters(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("startgate-test-pg-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_private_cluster() -> Result<Server, String> {
    let bin = find_server_binaries()?;
    let user = cluster_user()?;
    let base = std::env::temp_dir();
    remove_stale_clusters(&base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("startgate-test-pg-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot hand {} to postgres: {e}", dir.display()))?;
    }
    let data = dir.join("data");

    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = user {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;

    let postgres = bin.join("postgres");
    let (data_s, dir_s) = (data.clone(), dir.clone());
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    // The keeper thread forks the postmaster and then waits for it for the rest of the process:
    // the parent-death signal fires when the forking *thread* ends, so that thread must live as
    // long as the tests do.
    std::thread::Builder::new()
        .name("pg-keeper".into())
        .spawn(move || {
            let mut cmd = Command::new(postgres);
            cmd.arg("-D")
                .arg(&data_s)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir_s)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "log_min_messages=fatal",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
            // SAFETY: only async-signal-safe calls between fork and exec. PR_SET_PDEATHSIG is set
            // after the uid change (a credential change clears it).
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                    // Keep this thread (the postmaster's parent) alive until the process ends.
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start postgres: {e}")));
                }
            }
        })
        .map_err(|e| format!("cannot start the keeper thread: {e}"))?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "postgres did not start".to_string())??;

    let admin_url = url::Url::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin_url.as_str()).await?;
            sqlx::raw_sql("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        });
        match ok {
            Ok(()) => return Ok(Server { admin_url }),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "private cluster in {} did not come up: {e}",
                    dir.display()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates `sg_<label>_<pid>_<n>`.
    pub fn new(label: &str) -> TestDb {
        let server = server();
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "sg_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin_exec(
            server,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        );
        admin_exec(server, &format!("CREATE DATABASE \"{name}\""));
        let mut url = server.admin_url.clone();
        url.set_path(&format!("/{name}"));
        TestDb {
            name,
            url: url.to_string(),
        }
    }

    /// The URL with a password inserted (trust authentication ignores it), for tests that check
    /// that a password never shows.
    pub fn url_with_password(&self, password: &str) -> String {
        let mut url = url::Url::parse(&self.url).expect("test URL");
        url.set_password(Some(password)).expect("password");
        url.to_string()
    }

    /// Runs SQL (several statements allowed) and panics on error.
    pub fn exec(&self, sql: &str) {
        let sql = sql.to_string();
        let url = self.url.clone();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            sqlx::raw_sql(&sql).execute(&mut conn).await?;
            conn.close().await
        })
        .unwrap_or_else(|e| panic!("test SQL failed: {e}"));
    }

    /// Runs a query and returns every row as text columns (NULL as `None`).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = sql.to_string();
        let url = self.url.clone();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let rows = sqlx::raw_sql(&sql).fetch_all(&mut conn).await?;
            conn.close().await?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.try_get::<Option<String>, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| panic!("test query failed: {e}"))
    }
}

impl TestDb {
    /// The first column of the first row, if any (NULL as `None`).
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
    }

    /// Server sessions in this database, other than the asking one, whose query mentions
    /// `needle`.
    pub fn sessions_running(&self, needle: &str) -> usize {
        self.query(&format!(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND query LIKE '%{needle}%'"
        ))
        .len()
    }
}

/// Polls `check` until it holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(Ok(server)) = SERVER.get() {
            let _ = try_admin_exec(
                server,
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            );
        }
    }
}

fn try_admin_exec(server: &Server, sql: &str) -> Result<(), sqlx::Error> {
    let sql = sql.to_string();
    let url = server.admin_url.to_string();
    block_on(async move {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
        conn.close().await
    })
}

fn admin_exec(server: &Server, sql: &str) {
    try_admin_exec(server, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// What a run of the binary left: exit status, output, and how long it took.
#[derive(Debug)]
pub struct Output {
    /// The exit status, or 128+N when killed by signal N.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the real `startgate` binary with exactly `env` (plus PATH and HOME), killing it after
/// `limit`. Panics if it had to be killed.
pub fn startgate(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    run_bounded(startgate_command(args, env), limit)
}

/// [`startgate`] with the working directory set to `dir` (as when an app's image runs it from
/// the project root, where `alembic.ini` or `pyproject.toml` is).
pub fn startgate_in(dir: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = startgate_command(args, env);
    cmd.current_dir(dir);
    run_bounded(cmd, limit)
}

/// The command [`startgate`] and [`startgate_in`] run: the binary with exactly `env` (plus PATH,
/// HOME and LANG, JSON logs, the endpoint on a free port, backups in a temporary directory).
fn startgate_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_startgate"));
    cmd.args(args).env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("STARTGATE_LOG_FORMAT", "json");
    // Every test serves the endpoint, on a port of its own.
    cmd.env("STARTGATE_LISTEN", "127.0.0.1:0");
    // Backups go to a directory of this test process, never into the repository.
    cmd.env(
        "STARTGATE_BACKUP_DIR",
        std::env::temp_dir().join(format!("startgate-test-backups-{}", std::process::id())),
    );
    cmd.envs(env.iter().copied());
    cmd
}

/// Spawns `cmd` with piped output and waits at most `limit` for it. Panics if it cannot be
/// started or had to be killed.
pub fn run_bounded(cmd: Command, limit: Duration) -> Output {
    try_run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_bounded`], with a failure to start it or its being killed after `limit` as an error
/// (naming the program) for the caller to explain.
pub fn try_run_bounded(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} did not finish within {limit:?}; stderr so far: {}",
                err_reader.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Output {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed,
    })
}

/// A session of another client that holds locks until released (or dropped), the way a
/// long-running transaction in production would.
pub struct Blocker {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blocker {
    /// Opens a session named `app`, runs `sql` (which opens a transaction and takes its locks)
    /// and keeps the transaction open until `release` or drop (at most 60 s).
    pub fn hold(db: &TestDb, app: &str, sql: &str) -> Blocker {
        let url = format!("{}?application_name={app}", db.url);
        let sql = sql.to_string();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let result = block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(&sql).execute(&mut conn).await?;
                let _ = ready_tx.send(Ok(()));
                // Wait for the release without blocking the runtime's only thread for ever.
                let deadline = Instant::now() + Duration::from_secs(60);
                while release_rx.try_recv() == Err(mpsc::TryRecvError::Empty)
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
                conn.close().await
            });
            if let Err(e) = result {
                eprintln!("blocker session ended with: {e}");
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the blocker session started")
            .expect("the blocker took its locks");
        Blocker {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }

    pub fn release(&mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        self.release();
    }
}

/// The `message` of every JSON log line in `stderr`, one per line, as an operator would read
/// them (JSON escapes undone).
pub fn log_messages(stderr: &str) -> String {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| event["message"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The directory of a migrations fixture under `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// `GET path` with an optional bearer token: status code and body.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// How long a [`Running`] waits for a line or its exit.
pub const RUNNING_LIMIT: Duration = Duration::from_secs(60);

/// A running `startgate` whose stderr lines arrive on a channel.
pub struct Running {
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    /// Starts `startgate ARGS` with exactly `env` (plus PATH, JSON logs, the endpoint on a free
    /// port, backups in a temporary directory).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        Running::start_os(args, env, &[])
    }

    /// [`Running::start`] in the directory `dir`.
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        Running::spawn(Some(dir), args, env, &[])
    }

    /// [`Running::start`] with variables whose values need not be UTF-8.
    pub fn start_os(
        args: &[&str],
        env: &[(&str, &str)],
        os_env: &[(&str, &std::ffi::OsStr)],
    ) -> Running {
        Running::spawn(None, args, env, os_env)
    }

    fn spawn(
        dir: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
        os_env: &[(&str, &std::ffi::OsStr)],
    ) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_startgate"));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("STARTGATE_LOG_FORMAT", "json")
            .env("STARTGATE_LISTEN", "127.0.0.1:0")
            .env(
                "STARTGATE_BACKUP_DIR",
                std::env::temp_dir().join(format!("startgate-test-backups-{}", std::process::id())),
            )
            .envs(env.iter().copied())
            .envs(os_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn startgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Lines as bytes: an app's stderr passed through need not be UTF-8.
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + RUNNING_LIMIT;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line with {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// The endpoint's address, from its log line.
    pub fn endpoint(&mut self) -> SocketAddr {
        let line = self.wait_for_line("\"event\":\"endpoint\"");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        value["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// Waits for the exit; the status code and every stderr line.
    pub fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + RUNNING_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "startgate did not finish");
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

impl Running {
    /// Sends `signal` to startgate.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid, signal) };
    }

    /// Whether startgate is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

/// `GET path` until it answers `code`, for at most `limit`; the body of that answer.
pub fn wait_for_code(addr: SocketAddr, path: &str, code: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = get(addr, path, None);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer {code} within {limit:?}; last: {got} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fixture app (`examples/demo_app.rs`), built on first use when `cargo test` was told to
/// build only some targets.
pub fn demo_app() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/<profile>/deps/<test binary> -> target/<profile>/examples/demo_app
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let app = profile_dir.join("examples").join("demo_app");
        if !app.exists() {
            let release = profile_dir.ends_with("release");
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "--example", "demo_app"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build --example demo_app");
            assert!(status.success(), "cargo build --example demo_app failed");
        }
        app.display().to_string()
    })
    .clone()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test's app).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Process `pid`'s state letter and parent, from `/proc/PID/stat`.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// The children of `parent`, each with its state letter.
fn children(parent: i32) -> Vec<(i32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| match state_and_parent(pid) {
            Some((state, p)) if p == parent => Some((pid, state)),
            _ => None,
        })
        .collect()
}

/// The zombie children of `pid`.
pub fn zombie_children(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// The children of `parent` other than `except` that are alive (not zombies).
pub fn live_children(parent: i32, except: i32) -> Vec<i32> {
    children(parent)
        .into_iter()
        .filter(|&(pid, state)| pid != except && !matches!(state, 'Z' | 'X'))
        .map(|(pid, _)| pid)
        .collect()
}

impl Drop for Running {
    /// A test that fails half-way leaves no startgate (nor, through its parent-death signal,
    /// no app) behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
