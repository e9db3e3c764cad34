#!/usr/bin/env python3
"""Benchmark of `startgate run` supervising an app, and of its endpoint.

Measures, in one run:

  detection  how long after the app starts answering `/startupz` turns 200: `startgate run`
             starts the fixture app (examples/demo_app.rs) with a startup delay of 1 s plus a
             random 0-200 ms, probing it every STARTGATE_PROBE_INTERVAL (default 200 ms);
             median, p90 and max over --starts starts (target: <= interval + 20 ms, held
             against the max);
  RSS        startgate's own VmHWM and VmRSS (/proc/PID/status) while it supervises a ready
             app (target: <= 10 MiB), and the peak RSS of `startgate init` applying N=200
             generated migrations with the endpoint served (target: <= 8 MiB);
  /readyz    requests per second and latency on loopback with --connections keep-alive
             connections (target: >= 20,000 requests/s, p99 <= 5 ms), driven by
             examples/loadgen.rs.

The script runs `cargo build --release --example demo_app --example loadgen` and
`cargo build --release` itself when one of the three binaries is missing, or always with
--build. It creates and drops its own scratch databases (sg_bench_<pid>_<n>), kills every
process it starts, and exits 1 only on a harness error (a process that fails, a timeout, a
bad answer); a missed target is printed as MISSED and leaves the exit status 0.
Standard library only; Linux. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The helpers of the init benchmark: migration files, the clean peak-RSS launcher, psql and
# the scratch databases. apply.py only defines things at import time.
# No bench/__pycache__ left behind in the working tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import apply as init_bench  # noqa: E402

REPO_ROOT = init_bench.REPO_ROOT
DEFAULT_URL = init_bench.DEFAULT_URL
BenchError = init_bench.BenchError
log = init_bench.log

PROBE_INTERVAL_MS = 200  # STARTGATE_PROBE_INTERVAL's default; the script leaves it unset
TARGET_DETECTION_MS = PROBE_INTERVAL_MS + 20
TARGET_SUPERVISE_RSS_KB = 10 * 1024  # "10 MB", read as MiB like apply.py's 8 MiB
TARGET_INIT_RSS_KB = 8 * 1024
TARGET_RPS = 20_000
TARGET_P99_MS = 5.0
POLL_EVERY = 0.002  # /startupz is polled every 2 ms
START_TIMEOUT = 30.0  # one start: from spawning startgate to /startupz 200
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this
STARTUP_COMPLETE = "INFO: Application startup complete."
LISTENING = "demo app listening on "


def free_port() -> int:
    """A port nothing listens on now (others' tests run on this machine: a fixed port may be
    taken, and a probe answered by someone else's server would be a wrong figure)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..1."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p90": percentile(values, 0.9),
            "min": min(values), "max": max(values), "samples": [round(v, 2) for v in values]}


def proc_status_kb(pid: int) -> dict:
    """VmHWM and VmRSS of a live process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# One supervised start


class Supervised:
    """`startgate run -- demo_app` with its stdout and stderr read line by line, each line
    stamped with time.monotonic() when it arrives. The app's stdout is startgate's own (it is
    inherited), its stderr is relayed by startgate, and startgate's JSON log is on stderr too."""

    def __init__(self, binary: Path, demo_app: Path, env: dict, delay_ms: int, cwd: Path):
        self.port = free_port()
        env = dict(env, PORT=str(self.port), DEMO_STARTUP_DELAY=f"{delay_ms}ms", DEMO_MODE="serve")
        self.proc = subprocess.Popen([str(binary), "run", "--", str(demo_app)], env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.partial = {}
        for name, f in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f, selectors.EVENT_READ, name)
            self.partial[name] = b""
        self.lines: list[tuple[float, str, str]] = []  # (monotonic, stream, line)
        self.app_pid: int | None = None
        self.endpoint: str | None = None
        self.closed = 0

    def pump(self, timeout: float) -> None:
        """Reads whatever arrives within `timeout` seconds (0: only what is there now)."""
        for key, _ in self.sel.select(max(0.0, timeout)):
            try:
                data = os.read(key.fileobj.fileno(), 65536)
            except BlockingIOError:
                continue
            now = time.monotonic()
            name = key.data
            if not data:
                self.sel.unregister(key.fileobj)
                self.closed += 1
                continue
            buf = self.partial[name] + data
            *complete, self.partial[name] = buf.split(b"\n")
            for raw in complete:
                self.on_line(now, name, raw.decode(errors="replace"))

    def on_line(self, at: float, stream: str, line: str) -> None:
        self.lines.append((at, stream, line))
        event = self.event(line)
        if event.get("event") == "endpoint" and self.endpoint is None:
            self.endpoint = event.get("address")
        elif event.get("event") == "app.started":
            self.app_pid = event.get("pid")

    @staticmethod
    def event(line: str) -> dict:
        if not line.startswith("{"):
            return {}
        try:
            e = json.loads(line)
        except ValueError:
            return {}
        return e if isinstance(e, dict) else {}

    def first(self, pred) -> float | None:
        for at, stream, line in self.lines:
            if pred(stream, line):
                return at
        return None

    def wait_for(self, what: str, cond, deadline: float) -> None:
        while not cond():
            if self.proc.poll() is not None and self.closed == 2:
                raise BenchError(f"startgate exited with status {self.proc.returncode} before {what}; "
                                 f"its output ends with:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}; startgate's output ends with:\n{self.tail()}")
            self.pump(0.05)

    def tail(self, n: int = 15) -> str:
        return "\n".join(f"  [{s}] {line[:300]}" for _, s, line in self.lines[-n:])

    def stop(self) -> None:
        """SIGTERM (startgate forwards it to the app), then SIGKILL to both after STOP_GRACE."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + STOP_GRACE
            while self.proc.poll() is None and time.monotonic() < end:
                self.pump(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        if self.app_pid:
            # The app has its own process group and is killed when startgate dies
            # (PR_SET_PDEATHSIG), but make sure of it.
            try:
                os.killpg(self.app_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                self.sel.unregister(f)
            except (KeyError, ValueError):
                pass
            f.close()
        self.sel.close()


class Poller:
    """GET on one keep-alive connection to the endpoint."""

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        self.conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            # Reconnect once: the endpoint closes a connection after 60 s.
            self.conn.close()
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args, binary: Path, demo_app: Path, loadgen: Path, psql_path: str):
        self.args = args
        self.binary, self.demo_app, self.loadgen = binary, demo_app, loadgen
        self.env = init_bench.clean_env()
        self.psql = init_bench.Psql(psql_path, self.env)
        self.dbs = init_bench.Databases(self.psql, args.database_url)
        self.tmp = Path(tempfile.mkdtemp(prefix="sg_bench_supervise_"))
        self.live: list[Supervised] = []
        self.rng = random.Random(args.seed)

    def sg_env(self, url: str, migrations: Path) -> dict:
        env = dict(self.env)
        env.update({"DATABASE_URL": url, "STARTGATE_MIGRATIONS": str(migrations),
                    "STARTGATE_LOG_FORMAT": "json", "STARTGATE_TERMINATION_LOG": "",
                    "STARTGATE_LISTEN": "127.0.0.1:0"})
        return env

    def start(self, env: dict, delay_ms: int) -> Supervised:
        s = Supervised(self.binary, self.demo_app, env, delay_ms, self.tmp)
        self.live.append(s)
        return s

    def finish(self, s: Supervised) -> None:
        s.stop()
        self.live.remove(s)

    # -- 1. detection latency

    def one_start(self, env: dict) -> dict:
        delay_ms = 1000 + self.rng.randrange(0, 201)
        s = self.start(env, delay_ms)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            s.wait_for("the endpoint address", lambda: s.endpoint is not None, deadline)
            poller = Poller(s.endpoint)
            try:
                # Poll /startupz every 2 ms; between polls, read startgate's output.
                first_200 = None
                polls = 0
                next_poll = time.monotonic()
                while first_200 is None:
                    s.pump(next_poll - time.monotonic())
                    if time.monotonic() < next_poll:
                        continue
                    status, _ = poller.get("/startupz")
                    now = time.monotonic()
                    polls += 1
                    if status == 200:
                        first_200 = now
                    elif status != 503:
                        raise BenchError(f"/startupz answered {status}")
                    if now > deadline:
                        raise BenchError(f"/startupz still 503 after {START_TIMEOUT:.0f} s:\n{s.tail()}")
                    next_poll = now + POLL_EVERY
                # The app.ready line is logged just before /startupz turns; read until it is in.
                s.wait_for("the app.ready log line",
                           lambda: s.first(lambda st, ln: s.event(ln).get("event") == "app.ready") is not None,
                           time.monotonic() + 5)
                _, body = poller.get("/status")
            finally:
                poller.close()
            complete = s.first(lambda st, ln: st == "stderr" and ln == STARTUP_COMPLETE)
            listening = s.first(lambda st, ln: st == "stdout" and ln.startswith(LISTENING))
            ready_line = s.first(lambda st, ln: s.event(ln).get("event") == "app.ready")
            if complete is None or listening is None:
                raise BenchError(f"the app's startup lines were not seen:\n{s.tail()}")
            phases = {p["phase"]: p["duration_ms"] for p in json.loads(body).get("phases", [])}
            return {"delay_ms": delay_ms, "polls": polls,
                    "latency_ms": (first_200 - complete) * 1000,
                    "latency_from_stdout_ms": (first_200 - listening) * 1000,
                    "relay_ms": (complete - listening) * 1000,
                    "app_ready_log_ms": (ready_line - complete) * 1000,
                    "phases_ms": phases}
        finally:
            self.finish(s)

    def detection(self, url: str, migrations: Path) -> dict:
        env = self.sg_env(url, migrations)
        runs = []
        for i in range(self.args.starts):
            r = self.one_start(env)
            log(f"  start {i + 1:2d}/{self.args.starts}: delay {r['delay_ms']} ms, /startupz 200 "
                f"{r['latency_ms']:6.1f} ms after 'startup complete' (app.ready logged after "
                f"{r['app_ready_log_ms']:6.1f} ms; {r['polls']} polls)")
            runs.append(r)
        lat = summary([r["latency_ms"] for r in runs])
        phase_names = list(dict.fromkeys(p for r in runs for p in r["phases_ms"]))
        return {
            "starts": len(runs), "probe_interval_ms": PROBE_INTERVAL_MS, "poll_every_ms": POLL_EVERY * 1000,
            "latency_ms": lat,
            "latency_from_stdout_line_ms": summary([r["latency_from_stdout_ms"] for r in runs]),
            "stderr_relay_ms": summary([r["relay_ms"] for r in runs]),
            "app_ready_log_ms": summary([r["app_ready_log_ms"] for r in runs]),
            "phases_median_ms": {p: statistics.median(r["phases_ms"].get(p, 0) for r in runs) for p in phase_names},
            "delays_ms": [r["delay_ms"] for r in runs],
            "target_ms": TARGET_DETECTION_MS,
            "met": lat["max"] <= TARGET_DETECTION_MS,
        }

    # -- 2 and 3: RSS while supervising, and /readyz throughput, on one ready startgate

    def loadgen_run(self, address: str, sg_pid: int, threads: int) -> dict:
        a = self.args
        argv = [str(self.loadgen), address, "/readyz", "--connections", str(a.connections),
                "--seconds", str(a.seconds), "--threads", str(threads), "--warmup", "1"]
        cpu0 = cpu_seconds(sg_pid)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)
        try:
            out, err = p.communicate(timeout=a.seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError("loadgen did not finish in time") from None
        finally:
            if p.poll() is None:  # timed out, or Ctrl-C
                p.kill()
                p.communicate()
        wall = time.monotonic() - t0
        cpu = cpu_seconds(sg_pid) - cpu0
        if p.returncode != 0:
            raise BenchError(f"loadgen exited with status {p.returncode}: {err.decode(errors='replace').strip()}")
        try:
            r = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"loadgen printed no JSON: {out!r}") from None
        # CPU over the whole run (warm-up included), as a share of one core.
        r["startgate_cpu_share"] = round(cpu / wall, 3)
        if err.strip():
            r["stderr"] = err.decode(errors="replace").strip()
        return r

    def supervising(self, url: str, migrations: Path) -> dict:
        a = self.args
        s = self.start(self.sg_env(url, migrations), 500)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            s.wait_for("app.ready", lambda: s.first(lambda st, ln: s.event(ln).get("event") == "app.ready")
                       is not None, deadline)
            # A few seconds of readiness probing (one every 5 s once ready).
            settle_until = time.monotonic() + a.settle
            while time.monotonic() < settle_until:
                s.pump(settle_until - time.monotonic())
            if s.proc.poll() is not None:
                raise BenchError(f"startgate exited while supervising:\n{s.tail()}")
            rss_idle = proc_status_kb(s.proc.pid)
            poller = Poller(s.endpoint)
            try:
                status, body = poller.get("/readyz")
            finally:
                poller.close()
            if status != 200:
                raise BenchError(f"/readyz answered {status} ({body!r}) with the app ready")
            log(f"  supervising a ready app for {a.settle:g} s: VmHWM {rss_idle['VmHWM']} KiB, "
                f"VmRSS {rss_idle['VmRSS']} KiB")
            loads = []
            for threads in self.args.threads:
                s.pump(0)
                r = self.loadgen_run(s.endpoint, s.proc.pid, threads)
                log(f"  loadgen {a.connections} connections, {threads} thread(s): {r['rps']:.0f} req/s, "
                    f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, non-200 "
                    f"{r['non_200']}, errors {r['errors']}; startgate CPU {r['startgate_cpu_share'] * 100:.0f}% "
                    "of a core")
                loads.append(r)
            s.pump(0)
            rss_after = proc_status_kb(s.proc.pid)
            if s.proc.poll() is not None:
                raise BenchError(f"startgate exited during the load runs:\n{s.tail()}")
        finally:
            self.finish(s)
        best = max(loads, key=lambda r: r["rps"])
        return {
            "rss": {"after_ready_kb": rss_idle, "after_load_kb": rss_after, "settle_s": a.settle,
                    "target_kb": TARGET_SUPERVISE_RSS_KB,
                    "met": rss_idle["VmHWM"] <= TARGET_SUPERVISE_RSS_KB},
            "readyz": {"runs": loads, "best": best, "target_rps": TARGET_RPS, "target_p99_ms": TARGET_P99_MS,
                       "met_rps": best["rps"] >= TARGET_RPS, "met_p99": best["p99_ms"] <= TARGET_P99_MS,
                       "non_200": sum(r["non_200"] for r in loads), "errors": sum(r["errors"] for r in loads)},
        }

    # -- 2b. init's peak RSS with the endpoint served

    def init_rss(self, migrations: Path) -> dict:
        out = {}
        variants = [("as-given", self.args.database_url)]
        if init_bench.param(self.args.database_url, "sslmode") != "disable":
            variants.append(("disable", init_bench.with_param(self.args.database_url, "sslmode", "disable")))
        for key, admin in variants:
            apply_kb, noop_kb = [], []
            for i in range(self.args.rss_runs):
                name, url = self.dbs.create()
                url = init_bench.with_database(admin, name)
                for kind, into in (("apply", apply_kb), ("noop", noop_kb)):
                    err = self.tmp / f"init-{key}-{i}-{kind}.log"
                    run = init_bench.rss_run([str(self.binary), "init"], self.sg_env(url, migrations), err, self.tmp)
                    init_bench.check(run, f"startgate init ({kind}, URL {key})")
                    into.append(run.maxrss_kb)
                self.dbs.drop(name)
            out[key] = {"apply_kb": apply_kb, "noop_kb": noop_kb, "max_kb": max(apply_kb + noop_kb)}
            log(f"  init N=200, URL {key}: peak RSS applying {max(apply_kb)} KiB, no-op {max(noop_kb)} KiB")
        worst = max(v["max_kb"] for v in out.values())
        return {"n": 200, "runs": self.args.rss_runs, "clean_launcher": init_bench.subreaper(),
                "variants": out, "max_kb": worst, "target_kb": TARGET_INIT_RSS_KB,
                "met": worst <= TARGET_INIT_RSS_KB}

    def run(self) -> dict:
        out: dict = {"startgate": {"binary": str(self.binary)},
                     "demo_app": str(self.demo_app), "loadgen": str(self.loadgen)}
        out["startgate"]["version"] = subprocess.run([str(self.binary), "--version"], capture_output=True,
                                                     text=True, env=self.env).stdout.strip()
        out["config"] = {"starts": self.args.starts, "seconds": self.args.seconds,
                         "connections": self.args.connections, "threads": self.args.threads,
                         "settle_s": self.args.settle, "rss_runs": self.args.rss_runs, "seed": self.args.seed}
        out["load_at_start"] = init_bench.machine_load()

        # One database for the supervised starts: the first applies the one migration, the
        # others apply nothing.
        one = self.tmp / "migrations-one"
        one.mkdir()
        (one / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS bench_t (id int);\n")
        name, url = self.dbs.create()
        log(f"1. /startupz detection latency, {self.args.starts} starts (database {name})")
        out["detection"] = self.detection(url, one)
        log("2, 3. startgate supervising a ready app: RSS, then /readyz under load")
        out.update(self.supervising(url, one))
        self.dbs.drop(name)

        log("2b. peak RSS of startgate init, N=200, endpoint served")
        migrations, _ = init_bench.generate(self.tmp, 200)
        out["init_rss"] = self.init_rss(migrations)
        out["load_at_end"] = init_bench.machine_load()
        out["targets_met"] = {
            "detection": out["detection"]["met"],
            "supervise_rss": out["rss"]["met"],
            "init_rss": out["init_rss"]["met"],
            "readyz_rps": out["readyz"]["met_rps"],
            "readyz_p99": out["readyz"]["met_p99"],
        }
        return out

    def cleanup(self) -> None:
        for s in list(self.live):
            try:
                self.finish(s)
            except OSError as e:
                log(f"warning: stopping startgate (pid {s.proc.pid}): {e}")
        for f in self.dbs.drop_all():
            log(f"warning: could not drop scratch database {f}")
        if self.args.keep_files:
            log(f"kept the generated files and logs in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Output


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_report(out: dict, f=sys.stdout) -> None:
    p = lambda s="": print(s, file=f)  # noqa: E731
    c = out["config"]
    p(f"startgate  {out['startgate']['version']}  ({out['startgate']['binary']})")
    p(f"fixtures   {out['demo_app']}, {out['loadgen']}")

    def load(m: dict) -> str:
        la = "/".join(f"{x:.2f}" for x in m.get("loadavg", []))
        psi = m.get("cpu_pressure_some", {})
        return f"load average {la}" + (f", CPU pressure {psi.get('avg60', 0):.0f}% (60 s)" if psi else "")

    p(f"machine    {out['load_at_start'].get('cpus')} CPUs; at start {load(out['load_at_start'])}; "
      f"at end {load(out['load_at_end'])}")
    p()
    d = out["detection"]
    lat = d["latency_ms"]
    p(f"1. Probe detection latency: 'INFO: Application startup complete.' (app stderr, relayed by startgate) "
      f"-> first /startupz 200")
    p(f"   {d['starts']} starts, app startup delay 1000-1200 ms (random), STARTGATE_PROBE_INTERVAL "
      f"{d['probe_interval_ms']} ms (default), /startupz polled every {d['poll_every_ms']:g} ms over keep-alive")
    p(f"   median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms, max {lat['max']:.1f} ms (min {lat['min']:.1f}); "
      f"target max <= {d['target_ms']} ms: {verdict(d['met'])}")
    for label, key in (("from the app's stdout line (not relayed)", "latency_from_stdout_line_ms"),
                       ("cross-check: app.ready log line - startup complete", "app_ready_log_ms"),
                       ("stderr relay: startup complete - stdout line", "stderr_relay_ms")):
        s = d[key]
        p(f"   {label}: median {s['median']:.1f} ms, p90 {s['p90']:.1f}, max {s['max']:.1f}")
    p("   /status phase durations (median ms): "
      + ", ".join(f"{k} {v:g}" for k, v in d["phases_median_ms"].items()))
    p()
    r = out["rss"]
    idle, after = r["after_ready_kb"], r["after_load_kb"]
    p(f"2. startgate's RSS supervising a ready app (/proc/PID/status, after {r['settle_s']:g} s of readiness probing)")
    p(f"   VmHWM {idle['VmHWM'] / 1024:.2f} MiB ({idle['VmHWM']} KiB), VmRSS {idle['VmRSS'] / 1024:.2f} MiB; "
      f"target VmHWM <= {r['target_kb'] / 1024:.0f} MiB: {verdict(r['met'])}")
    p(f"   after the /readyz load runs: VmHWM {after['VmHWM'] / 1024:.2f} MiB, VmRSS {after['VmRSS'] / 1024:.2f} MiB "
      "(no target)")
    i = out["init_rss"]
    p(f"   peak RSS of `init`, N={i['n']} migrations, endpoint served (ru_maxrss, clean launcher, "
      f"max of {i['runs']} applying and {i['runs']} no-op runs):")
    for key, v in i["variants"].items():
        p(f"     URL {key:<9} applying {max(v['apply_kb']) / 1024:.2f} MiB, no-op {max(v['noop_kb']) / 1024:.2f} MiB")
    p(f"   max {i['max_kb'] / 1024:.2f} MiB ({i['max_kb']} KiB); target <= {i['target_kb'] / 1024:.0f} MiB: "
      f"{verdict(i['met'])}")
    p()
    y = out["readyz"]
    p(f"3. /readyz on loopback, {c['connections']} keep-alive connections, {c['seconds']:g} s after a 1 s warm-up "
      "(examples/loadgen.rs)")
    for run in y["runs"]:
        p(f"   loadgen threads {run['threads']}: {run['rps']:9.0f} req/s, p50 {run['p50_ms']:.3f} ms, "
          f"p90 {run['p90_ms']:.3f}, p99 {run['p99_ms']:.3f}, max {run['max_ms']:.3f}; {run['requests']} requests, "
          f"non-200 {run['non_200']}, errors {run['errors']}, reconnects {run['reconnects']}; "
          f"startgate CPU {run['startgate_cpu_share'] * 100:.0f}% of a core")
    b = y["best"]
    p(f"   best (threads {b['threads']}): {b['rps']:.0f} req/s, target >= {y['target_rps']}: {verdict(y['met_rps'])}; "
      f"p99 {b['p99_ms']:.3f} ms, target <= {y['target_p99_ms']:g} ms: {verdict(y['met_p99'])}")
    p()
    p("targets: " + ", ".join(f"{k} {verdict(v)}" for k, v in out["targets_met"].items()))


# --------------------------------------------------------------------------------------------


def find_binaries(args) -> tuple[Path, Path, Path]:
    target = (args.target_dir or REPO_ROOT / "target").resolve()
    release = target / "release"
    binaries = (release / "startgate", release / "examples" / "demo_app", release / "examples" / "loadgen")
    if args.build or not all(b.exists() for b in binaries):
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        for argv in (["cargo", "build", "--release", "--example", "demo_app", "--example", "loadgen"],
                     ["cargo", "build", "--release"]):
            log(f"{' '.join(argv)} (CARGO_TARGET_DIR={target})")
            subprocess.run(argv, cwd=REPO_ROOT, check=True, env=env)
    for b in binaries:
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} is not an executable")
    return binaries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", type=Path,
                    help="cargo target directory holding release/startgate and release/examples/{demo_app,loadgen} "
                         "(default: target/ in the repository)")
    ap.add_argument("--build", action="store_true",
                    help="run the two cargo build commands even when the binaries exist")
    ap.add_argument("--database-url", default=DEFAULT_URL,
                    help=f"admin URL, a role that may CREATE DATABASE (default {DEFAULT_URL})")
    ap.add_argument("--psql", help="the psql binary (default: as bench/apply.py finds it)")
    ap.add_argument("--starts", type=int, default=20, help="supervised starts for the detection latency (default 20)")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="measured seconds of each /readyz load run, after 1 s of warm-up (default 5; keep it "
                         "well under the endpoint's 60 s connection lifetime)")
    ap.add_argument("--connections", type=int, default=16, help="loadgen connections (default 16)")
    ap.add_argument("--threads", default="1,2",
                    help="comma list of loadgen thread counts, one load run each; the best is held against "
                         "the target (default 1,2)")
    ap.add_argument("--settle", type=float, default=6.0,
                    help="seconds of supervising a ready app before reading its RSS (default 6: one readiness "
                         "probe, which comes every 5 s)")
    ap.add_argument("--rss-runs", type=int, default=3, help="init peak-RSS runs per URL and kind (default 3)")
    ap.add_argument("--seed", type=int, help="seed for the random startup delays")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary on stdout (the report goes to stderr)")
    ap.add_argument("--keep-files", action="store_true", help="keep the generated migrations and logs")
    args = ap.parse_args()
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--threads {args.threads!r}: expected a comma list of whole numbers")
    if (min(args.starts, args.connections, args.rss_runs) < 1 or not args.threads or min(args.threads) < 1
            or not 0 < args.seconds <= 50 or args.settle < 0):
        ap.error("--starts, --connections, --rss-runs and --threads must be at least 1, --seconds in (0, 50], "
                 "--settle at least 0")

    try:
        binary, demo_app, loadgen = find_binaries(args)
        psql_path, _ = init_bench.find_psql(args.psql)
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1

    def interrupted(signum, _frame):
        raise KeyboardInterrupt

    # SIGTERM too ends in the cleanup below (processes killed, databases dropped); a
    # background job started by a non-interactive shell ignores SIGINT, so Ctrl-C is not
    # always there to use.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    bench = Bench(args, binary, demo_app, loadgen, psql_path)
    try:
        out = bench.run()
    except (BenchError, subprocess.CalledProcessError, OSError, ValueError, KeyError, http.client.HTTPException) as e:
        log(f"error: {type(e).__name__}: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.cleanup()
    if args.json:
        print_report(out, f=sys.stderr)
        print(json.dumps(out, indent=2))
    else:
        print_report(out)
        print()
        print("JSON summary:")
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
