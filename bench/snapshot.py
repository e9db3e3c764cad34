#!/usr/bin/env python3
"""Benchmark of schema snapshot and drift (issue 4, section "Benchmark").

Creates a scratch database with T tables (default 500), each with 5 columns and 2 indexes
(its primary key and one secondary index), row-level security and a policy on every 10th
table; takes its snapshot once with `startgate schema --json` as the expectation; then
measures the wall time of

  verify   `startgate verify` with STARTGATE_EXPECT_SCHEMA pointing at that snapshot: process
           start, connection, the catalog snapshot, the drift and the exit (target: median
           <= 200 ms);
  schema   `startgate schema --json` (snapshot and printing);

and, for context (no target), `startgate --version` (process start alone) and `startgate
verify` without an expectation (connection and the INVALID-index query only).

Wall clock is time.perf_counter() around spawning the process and reaping it with
os.wait4(); each figure is the median of --runs timed runs (default 10) after one untimed
warm-up run. Every timed verify must exit 0 (the database is the one the snapshot was taken
from). The scratch database is dropped at the end, whatever happens. Standard library only;
Linux.

Exit status: 0 when the target is met, 2 when it is missed, 1 when a run failed.

Usage:
  python3 bench/snapshot.py [--database-url URL] [--tables 500] [--runs 10] [--json]
                            [--binary PATH | --target-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = os.environ.get("STARTGATE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TARGET_VERIFY_MS = 200.0
POLICY_EVERY = 10


class BenchError(Exception):
    """A run failed: a tool exited non-zero, or a result was wrong."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The schema


def schema_sql(tables: int) -> str:
    """T tables of 5 columns and 2 indexes each; RLS and a policy on every 10th. One
    transaction, so that a failure leaves nothing half-made."""
    out = ["BEGIN;"]
    for i in range(1, tables + 1):
        t = f"t{i:04d}"
        out.append(
            f"CREATE TABLE public.{t} (\n"
            "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
            "    tenant_id uuid NOT NULL,\n"
            "    name text NOT NULL,\n"
            "    amount numeric(12, 2) NOT NULL DEFAULT 0,\n"
            "    created_at timestamptz NOT NULL DEFAULT now()\n"
            ");"
        )
        out.append(f"CREATE INDEX {t}_tenant_created_idx ON public.{t} (tenant_id, created_at);")
        if i % POLICY_EVERY == 0:
            out.append(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY;")
            out.append(
                f"CREATE POLICY {t}_tenant ON public.{t} "
                "USING (tenant_id = current_setting('app.tenant')::uuid);"
            )
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# URLs and processes


def with_database(url: str, name: str) -> str:
    u = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True) if k != "dbname"]
    return urllib.parse.urlunsplit(
        (u.scheme, u.netloc, "/" + urllib.parse.quote(name),
         urllib.parse.urlencode(query, quote_via=urllib.parse.quote), "")
    )


def redact(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    if u.password is None:
        return url
    userinfo, _, hostpart = u.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit((u.scheme, f"{user}:***@{hostpart}", u.path, u.query, ""))


def clean_env() -> dict[str, str]:
    """The environment minus everything that would configure startgate or libpq behind the
    benchmark's back (DATABASE_URL*, STARTGATE_*, PG*)."""
    return {
        k: v for k, v in os.environ.items()
        if not (k.startswith("STARTGATE_") or k.startswith("DATABASE_URL") or k.startswith("PG"))
    }


def psql(url: str, *args: str, stdin: str | None = None) -> str:
    """Runs psql -X -q -v ON_ERROR_STOP=1 -At; returns stdout; raises BenchError on failure."""
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", url, *args]
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=clean_env())
    if p.returncode != 0:
        raise BenchError(f"psql {' '.join(args)[:80]} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def timed(argv: list[str], env: dict[str, str], stdout_path: Path, stderr_path: Path) -> tuple[float, int]:
    """Wall clock (seconds) and exit status of one process, spawned directly and reaped with
    os.wait4()."""
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, _ = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
    return t1 - t0, os.waitstatus_to_exitcode(status)


def last_error(stderr_path: Path) -> str:
    """The last log message of a failed run, for the error text."""
    lines = stderr_path.read_text(errors="replace").strip().splitlines()
    for line in reversed(lines):
        try:
            return json.loads(line).get("message", line)
        except ValueError:
            continue
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------------------------
# The binary


def find_binary(args: argparse.Namespace) -> Path:
    if args.binary is not None:
        binary = args.binary
    elif args.target_dir is not None:
        log(f"cargo build --release (CARGO_TARGET_DIR={args.target_dir})")
        env = dict(os.environ, CARGO_TARGET_DIR=str(args.target_dir))
        subprocess.run(["cargo", "build", "--release"], cwd=REPO_ROOT, check=True, env=env)
        binary = args.target_dir / "release" / "startgate"
    else:
        binary = REPO_ROOT / "target" / "release" / "startgate"
        if not binary.exists():
            log(f"{binary} is absent: cargo build --release")
            subprocess.run(["cargo", "build", "--release"], cwd=REPO_ROOT, check=True)
    binary = binary.resolve()
    if not os.access(binary, os.X_OK):
        raise BenchError(f"{binary} is not an executable")
    # A binary older than the commands measured here cannot run them: say so plainly.
    probe = subprocess.run([str(binary), "verify", "--help"], capture_output=True, env=clean_env())
    if probe.returncode != 0:
        raise BenchError(f"{binary} has no `verify` command: it is older than this benchmark; "
                         "rebuild it (cargo build --release) or pass --target-dir DIR to build one")
    newest_src = max((p.stat().st_mtime for p in (REPO_ROOT / "src").rglob("*.rs")), default=0.0)
    if args.binary is None and binary.stat().st_mtime < newest_src:
        log(f"warning: {binary} is older than the newest file under src/; "
            "pass --target-dir DIR to measure a fresh build")
    return binary


# --------------------------------------------------------------------------------------------
# The benchmark


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "runs": len(ms),
    }


def run(args: argparse.Namespace, binary: Path, work: Path) -> dict:
    db = f"sg_bench_snapshot_{os.getpid()}"
    url = with_database(args.database_url, db)
    admin = args.database_url
    psql(admin, "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(admin, "-c", f'CREATE DATABASE "{db}"')
    try:
        log(f"creating {args.tables} tables in {db} …")
        t0 = time.perf_counter()
        psql(url, stdin=schema_sql(args.tables))
        log(f"  done in {time.perf_counter() - t0:.1f} s")
        counts = psql(
            url, "-c",
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "        WHERE n.nspname = 'public' AND c.relkind = 'r'), "
            "       (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'), "
            "       (SELECT count(*) FROM pg_policies WHERE schemaname = 'public'), "
            "       current_setting('server_version')",
        ).strip().split("|")
        tables, indexes, policies, server = int(counts[0]), int(counts[1]), int(counts[2]), counts[3]
        if tables != args.tables or indexes != 2 * args.tables:
            raise BenchError(f"expected {args.tables} tables and {2 * args.tables} indexes, "
                             f"found {tables} and {indexes}")

        env = clean_env()
        env.update({"DATABASE_URL": url, "STARTGATE_LOG_FORMAT": "json"})
        expected = work / "expected.json"
        err = work / "stderr.log"

        # The expectation: the snapshot of this very database.
        _, rc = timed([str(binary), "schema", "--json"], env, expected, err)
        if rc != 0:
            raise BenchError(f"startgate schema --json exited {rc}: {last_error(err)}")
        snap = json.loads(expected.read_text())
        if len(snap.get("tables", [])) != args.tables:
            raise BenchError(f"the snapshot has {len(snap.get('tables', []))} tables, not {args.tables}")
        snapshot_bytes = expected.stat().st_size

        def measure(name: str, argv: list[str], extra: dict[str, str], want_stdout: str | None) -> list[float]:
            run_env = dict(env, **extra)
            out = work / f"{name}.out"
            seconds = []
            for i in range(args.runs + 1):  # the first run warms caches and is not counted
                s, rc = timed(argv, run_env, out, err)
                if rc != 0:
                    raise BenchError(f"{name}: {' '.join(argv[1:])} exited {rc}: {last_error(err)}")
                if want_stdout is not None and out.read_text() != want_stdout:
                    raise BenchError(f"{name}: unexpected output {out.read_text()[:200]!r}")
                if i > 0:
                    seconds.append(s)
            return seconds

        log(f"timing: {args.runs} runs each (after one warm-up run)")
        verify = measure("verify", [str(binary), "verify"],
                         {"STARTGATE_EXPECT_SCHEMA": str(expected)}, "schema verified\n")
        verify_exact = measure("verify_exact", [str(binary), "verify"],
                               {"STARTGATE_EXPECT_SCHEMA": str(expected), "STARTGATE_VERIFY": "exact"},
                               "schema verified\n")
        schema = measure("schema", [str(binary), "schema", "--json"], {}, expected.read_text())
        verify_bare = measure("verify_no_expectation", [str(binary), "verify"], {}, "schema verified\n")
        version = measure("version", [str(binary), "--version"], {}, None)
    finally:
        try:
            psql(admin, "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except BenchError as e:
            log(f"warning: could not drop {db}: {e}")

    return {
        "binary": str(binary),
        "database_url": redact(url),
        "server_version": server,
        "schema": {
            "tables": tables,
            "columns_per_table": 5,
            "indexes": indexes,
            "tables_with_rls_and_policy": policies,
            "snapshot_bytes": snapshot_bytes,
        },
        "verify_with_expectation": summary(verify),
        "verify_with_expectation_exact": summary(verify_exact),
        "schema_json": summary(schema),
        "verify_without_expectation": summary(verify_bare),
        "process_start_version": summary(version),
        "target": {
            "verify_median_ms_at_most": TARGET_VERIFY_MS,
            "met": statistics.median(verify) * 1000.0 <= TARGET_VERIFY_MS,
        },
    }


def report(result: dict) -> str:
    s = result["schema"]
    lines = [
        f"startgate {result['binary']}",
        f"database  {result['database_url']} (server {result['server_version']})",
        f"schema    {s['tables']} tables × {s['columns_per_table']} columns, {s['indexes']} indexes, "
        f"RLS and a policy on {s['tables_with_rls_and_policy']} tables; snapshot JSON {s['snapshot_bytes']} bytes",
        "",
        f"{'what':44} {'median':>9} {'min':>9} {'max':>9}",
    ]
    rows = [
        ("verify + STARTGATE_EXPECT_SCHEMA (subset)", "verify_with_expectation"),
        ("verify + STARTGATE_EXPECT_SCHEMA (exact)", "verify_with_expectation_exact"),
        ("schema --json", "schema_json"),
        ("verify without expectation (context)", "verify_without_expectation"),
        ("--version: process start (context)", "process_start_version"),
    ]
    for title, key in rows:
        r = result[key]
        lines.append(f"{title:44} {r['median_ms']:>6.1f} ms {r['min_ms']:>6.1f} ms {r['max_ms']:>6.1f} ms")
    t = result["target"]
    median = result["verify_with_expectation"]["median_ms"]
    lines.append("")
    lines.append(f"target: verify with expectation median {median:.1f} ms <= {t['verify_median_ms_at_most']:.0f} ms: "
                 f"{'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path,
                    help="the startgate binary to measure (default: target/release/startgate in the "
                         "repository, built with `cargo build --release` when absent)")
    ap.add_argument("--target-dir", type=Path,
                    help="build a release binary with CARGO_TARGET_DIR=DIR first and measure it "
                         "(leaves the shared target/ alone)")
    ap.add_argument("--database-url", default=DEFAULT_URL,
                    help=f"admin URL, a role that may CREATE DATABASE (default {redact(DEFAULT_URL)})")
    ap.add_argument("--tables", type=int, default=500, help="number of tables (default 500)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per measurement (default 10)")
    ap.add_argument("--json", action="store_true",
                    help="print the figures as JSON on stdout (the table goes to stderr)")
    args = ap.parse_args()
    if args.runs < 1 or args.tables < 1:
        ap.error("--runs and --tables must be at least 1")
    if args.binary is not None and args.target_dir is not None:
        ap.error("give --binary or --target-dir, not both")
    if args.target_dir is not None:
        args.target_dir = args.target_dir.resolve()
    if shutil.which("psql") is None:
        log("error: psql is not on PATH (it creates the scratch schema)")
        return 1

    work = Path(tempfile.mkdtemp(prefix="startgate-bench-snapshot-"))
    try:
        binary = find_binary(args)
        result = run(args, binary, work)
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = report(result)
    if args.json:
        log(text)
        print(json.dumps(result, indent=2))
    else:
        print(text)
    return 0 if result["target"]["met"] else 2


if __name__ == "__main__":
    sys.exit(main())
