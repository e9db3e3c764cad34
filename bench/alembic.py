#!/usr/bin/env python3
"""Benchmark of the Alembic no-op (issue 6, section "Benchmark").

An up-to-date Alembic project of N revisions (default 200, a linear chain in the 1.13+
template's style, with alembic.ini and a psycopg2 env.py), and two ways to start it:

  alembic     `alembic upgrade head` in the project directory: Python starts, imports
              SQLAlchemy, reads every revision file, connects, finds nothing to do;
  startgate   `startgate init` with STARTGATE_MIGRATE_COMMAND='alembic upgrade head':
              reads the config and every revision file, runs one query, never starts
              Python (the release binary, the endpoint disabled).

Target: startgate's median <= 1/20 of Alembic's. Each figure is the median wall clock over
--runs runs (spawn to reap). Alembic comes from the virtual environment the tests create
(target/tmp/alembic-venv-*; run `cargo test --test alembic` once) or --alembic PATH.
Standard library only; Linux.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 1 / 20

# No logging sections: the env.py below configures no logging, so Alembic prints nothing.
ALEMBIC_INI = """[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
path_separator = os
"""

ENV_PY = """import os

from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg2://", 1)
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = '''"""revision {n}

Revision ID: {rev}
Revises: {down_doc}
Create Date: 2026-11-21 09:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '{rev}'
down_revision: Union[str, Sequence[str], None] = {down}
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("CREATE TABLE t{n:04d} (id integer PRIMARY KEY, note text)")


def downgrade() -> None:
    op.execute("DROP TABLE t{n:04d}")
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rev_id(n: int) -> str:
    return f"{n:012x}"


def make_project(root: Path, count: int) -> None:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    for n in range(1, count + 1):
        down = "None" if n == 1 else repr(rev_id(n - 1))
        text = REVISION.format(
            n=n, rev=rev_id(n), down=down, down_doc="" if n == 1 else rev_id(n - 1)
        )
        (root / "migrations" / "versions" / f"{rev_id(n)}_revision_{n}.py").write_text(text)


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", "-X", "-q", "-d", url, "-c", sql], check=True)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("STARTGATE_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--alembic", help="the alembic executable (default: the test venv's)")
    parser.add_argument("--build", action="store_true", help="cargo build --release first")
    args = parser.parse_args()

    if args.build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO_ROOT, check=True)
    startgate = REPO_ROOT / "target" / "release" / "startgate"
    if not startgate.exists():
        raise SystemExit("no target/release/startgate: run with --build")
    alembic = args.alembic
    if alembic is None:
        found = sorted(glob.glob(str(REPO_ROOT / "target" / "tmp" / "alembic-venv-*" / "bin" / "alembic")))
        if not found:
            raise SystemExit("no Alembic: run `cargo test --test alembic` once, or pass --alembic")
        alembic = found[-1]

    admin = args.url
    db = f"sg_bench_alembic_{os.getpid()}"
    psql(admin, f'DROP DATABASE IF EXISTS "{db}"')
    psql(admin, f'CREATE DATABASE "{db}"')
    url = admin.rsplit("/", 1)[0] + "/" + db
    try:
        with tempfile.TemporaryDirectory(prefix="sg-bench-alembic-") as tmp:
            project = Path(tmp)
            make_project(project, args.revisions)
            env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "DATABASE_URL": url}
            log(f"applying {args.revisions} revisions with alembic …")
            timed([alembic, "upgrade", "head"], project, env)

            sg_env = dict(env)
            sg_env.update(
                {
                    "STARTGATE_MIGRATE_COMMAND": f"{alembic} upgrade head",
                    "STARTGATE_LISTEN": "",
                    "STARTGATE_LOG_FORMAT": "json",
                }
            )
            alembic_times, startgate_times = [], []
            for _ in range(args.runs):
                alembic_times.append(timed([alembic, "upgrade", "head"], project, env))
                startgate_times.append(timed([str(startgate), "init"], project, sg_env))
            a = statistics.median(alembic_times)
            s = statistics.median(startgate_times)
            ratio = s / a
            print(f"Alembic no-op, {args.revisions} revisions, median of {args.runs} runs")
            print(f"  alembic upgrade head   {a * 1000:8.1f} ms")
            print(f"  startgate init         {s * 1000:8.1f} ms")
            print(f"  ratio                  {ratio:8.3f}  (1/{1 / ratio:.0f}; target <= 1/20: {'met' if ratio <= TARGET_RATIO else 'MISSED'})")
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
