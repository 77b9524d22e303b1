"""Benchmark: the generated service's DB read against the floor, in one run.

Renders keel (the working tree, uncommitted changes included) into a temporary directory with
database=postgresql, installs it with uv, creates and seeds a throwaway PostgreSQL database,
then serves GET /products/{id} twice, one worker each:

- service: the generated project under its own gunicorn.conf.py (uvicorn worker, uvloop,
  httptools), production settings, cache off, the full middleware stack with Prometheus;
- floor:   benchmarks/floor_app.py, bare Starlette and a raw asyncpg pool, under uvicorn with
  uvloop and httptools, run by the same virtualenv's Python.

Each is driven by wrk with a random id per request: a warm-up, a measured run at -c64 and a burst
at -c256 that counts timeouts, socket errors and non-2xx answers. The script prints req/s, p50,
p99, the ratio to the floor, CPU per request of each process involved, and how many PostgreSQL
connections each stack opened (pool churn). It asserts nothing: it is a measurement to record.

Run from the repository root:  uv run python benchmarks/db_read.py   (about 2.5 minutes)
Needs: wrk (Debian: apt-get install wrk), uv, Python 3.11, PostgreSQL on 127.0.0.1:5432 with the
postgres user and trust authentication (bash ../shared/services.sh starts it).

Options worth knowing (--help lists them all):
    --cache memory          render with the in-memory cache on
    --profile-dir DIR       also sample each worker with py-spy and summarise where its CPU went
    --project DIR           benchmark an already generated, perhaps hand-edited, project: the
                            quickest way to try an optimisation before putting it in template/
    --env NAME=VALUE        extra environment for the service (e.g. DB_CPU_CORES=32)
    --keep                  keep the rendered project and the servers' logs
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "product_by_id.lua"
PG_ADMIN = BENCH_DIR / "pg_admin.py"

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PRODUCTS, CATEGORIES = 10_000, 100
# project_name "Bench Service" renders the project "bench-service" with the package below.
PROJECT_NAME, PROJECT_DIR, PACKAGE = "Bench Service", "bench-service", "bench_service"
SERVICE_APP_NAME = "keel-bench-service"
FLOOR_APP_NAME = "keel-bench-floor"
FALLBACK_POOL_SIZE = 10
# Long enough for every backend to flush its statistics (PostgreSQL does so at most once a second).
STATS_SETTLE_SECONDS = 1.5
READY_TIMEOUT_SECONDS = 60.0
VERSIONS_OF = ("fastapi", "starlette", "pydantic", "sqlalchemy", "asyncpg", "uvicorn", "gunicorn")


# ---------------------------------------------------------------------------- processes


class Processes:
    """Every long-running process the benchmark starts; all are stopped on exit, whatever happens.

    Each child gets its own session (process group), so a stop reaches the gunicorn master and
    its workers alike, and a Ctrl-C in the terminal reaches this script, which then stops them.
    """

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in reversed(self._started):
            self.stop(process)

    def start(self, command: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a command in its own process group and remember it."""
        process = subprocess.Popen(
            [str(part) for part in command], start_new_session=True, **kwargs
        )
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after `timeout`."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self._started:
            self._started.remove(process)


def stop_on_sigterm() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit so that every cleanup `finally` runs."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def children_of(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def cpu_seconds(
    pid: int, *, with_reaped_children: bool = False, system_only: bool = False
) -> float:
    """User + system CPU time of a process, optionally plus that of its children it has reaped.

    system_only: just the time spent in the kernel on the process's behalf (syscalls).
    """
    # Fields after the parenthesised command name: utime, stime, cutime, cstime are 14..17.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[14]) if system_only else int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of the whole PostgreSQL server: live processes and the backends that ended."""
    servers: dict[int, int] = {}  # pid -> parent pid, of every PostgreSQL process
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                servers[int(entry.name)] = int(stat[1])
    total = 0.0
    for pid, parent in servers.items():
        with contextlib.suppress(OSError):
            # The postmaster reaps every backend, so its children's time covers the ended ones.
            total += cpu_seconds(pid, with_reaped_children=parent not in servers)
    return total


def host_cpu_seconds() -> tuple[float, float, float]:
    """(busy, stolen, total) CPU seconds of the whole host so far, from /proc/stat.

    Stolen time is what the hypervisor gave to other guests: when it is high, the figures
    of that run say more about the neighbours than about the code.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, values[7] / hz, total / hz


# ---------------------------------------------------------------------------- setup


def project_env(**extra: str) -> dict[str, str]:
    """The environment for commands in the generated project: not keel's own virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def run(command: Sequence[str | Path], **kwargs: Any) -> str:
    """Run a command to completion; on failure show its output and raise."""
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, command))}")
    return str(result.stdout)


def render(destination: Path, *, cache: str, vcs_ref: str, **answers: Any) -> Path:
    """Render keel with the benchmark's answers (`answers` override them); returns the project
    directory."""
    import copier  # keel's dev environment has it; imported here so --help works without it
    from copier.errors import DirtyLocalWarning

    # User-level copier settings must not change the answers.
    settings = destination / "copier-settings.yml"
    settings.write_text("{}\n")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    project = destination / PROJECT_DIR
    with warnings.catch_warnings():
        # Benchmarking the working tree, uncommitted changes included, is the point.
        warnings.simplefilter("ignore", DirtyLocalWarning)
        copier.run_copy(
            src_path=str(REPO_ROOT),
            dst_path=project,
            data={
                "project_name": PROJECT_NAME,
                "python_version": "3.11",
                "database": "postgresql",
                "cache": cache,
                "metrics": "prometheus",
                "replicas": 1,
                "web_workers": 1,
                **answers,
            },
            defaults=True,
            unsafe=True,
            vcs_ref=vcs_ref,
            quiet=True,
        )
    return project


def install(project: Path) -> Path:
    """uv sync the generated project; returns its virtualenv's Python."""
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    run([uv, "sync", "--python", "3.11", "--quiet"], cwd=project, env=project_env())
    python = project / ".venv" / "bin" / "python"
    # A virtualenv copied along with a project still imports the original's code.
    imported = run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"])
    if not Path(imported.strip()).is_relative_to(project):
        raise SystemExit(f"{project}/.venv imports {imported.strip()}: delete that .venv")
    return python


def pg_admin(python: Path, *args: str) -> Any:
    """Run one benchmarks/pg_admin.py command with the project's Python; returns its JSON."""
    return json.loads(run([python, PG_ADMIN, *args], env=project_env()))


def database_urls(name: str) -> tuple[str, str]:
    """(SQLAlchemy URL for the service, asyncpg DSN for the floor) of the bench database."""
    address = f"{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    return f"postgresql+asyncpg://{address}", f"postgresql://{address}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((PG_HOST, 0))
        return int(probe.getsockname()[1])


def package_versions(python: Path, names: Sequence[str] = VERSIONS_OF) -> dict[str, str]:
    """Versions of the libraries on the read path, in the project's virtualenv."""
    code = (
        "import importlib.metadata as m, json, sys;"
        f"print(json.dumps({{p: m.version(p) for p in {list(names)!r}}}"
        " | {'python': sys.version.split()[0]}))"
    )
    return dict(json.loads(run([python, "-c", code], env=project_env())))


@dataclass(frozen=True)
class Budget:
    """The service's pool, as its startup log line states it."""

    pool_size: int | None
    max_overflow: int | None
    line: str

    def describe_pool(self) -> str:
        """Short form for the tables."""
        return f"pool_size {self.pool_size} + max_overflow {self.max_overflow}"


def service_budget(python: Path, project: Path, env: dict[str, str]) -> Budget:
    """The "connection budget: ..." line the service logs at startup, computed the same way.

    The service logs it at INFO, below the LOG_LEVEL=WARNING it is benchmarked with, so the
    script asks the service's own settings, with the service's environment, for the same line.
    """
    code = (
        f"from {PACKAGE}.settings import get_settings;"
        "print(get_settings().connection_budget().describe())"
    )
    try:
        line = run([python, "-c", code], cwd=project, env=env).strip()
    except SystemExit:
        return Budget(None, None, "connection budget: unknown (the service's settings did not say)")
    match = re.search(r"pool_size (\d+) \+ max_overflow (\d+)", line)
    if match is None:
        return Budget(None, None, line)
    return Budget(int(match.group(1)), int(match.group(2)), line)


# ---------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A running stack under test."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    ready_path: str
    log: Path
    application_name: str
    database: str
    pool: str
    is_gunicorn: bool = False
    # gunicorn's master serves the service's metrics apart from the API's port.
    metrics_url: str = ""

    def worker_pid(self) -> int:
        """The process that serves requests: gunicorn's first worker, or uvicorn itself."""
        children = children_of(self.process.pid)
        return children[0] if self.is_gunicorn and children else self.process.pid


def wait_until_ready(server: Server) -> None:
    """Poll the readiness URL until it answers 200; fail with the server's log otherwise."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(server.url + server.ready_path, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    tail = server.log.read_text(errors="replace")[-4000:]
    raise SystemExit(f"{server.name} did not become ready; its log ends with:\n{tail}")


def start_service(
    processes: Processes,
    project: Path,
    env: dict[str, str],
    log: Path,
    budget: Budget,
    *,
    name: str = "service",
) -> Server:
    """Start the generated service with its own gunicorn.conf.py (WEB_CONCURRENCY workers)."""
    with log.open("wb") as output:
        process = processes.start(
            # python -m, not the venv's gunicorn script, whose #! may name another virtualenv.
            [project / ".venv" / "bin" / "python", "-m", "gunicorn"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Server(
        name=name,
        process=process,
        url=f"http://{env['HOST']}:{env['PORT']}",
        ready_path="/ready",
        log=log,
        application_name=env["DB_APPLICATION_NAME"],
        database=env["DATABASE_URL"].rsplit("/", 1)[1],
        pool=budget.describe_pool(),
        is_gunicorn=True,
        metrics_url=f"http://{env['HOST']}:{env['METRICS_PORT']}/metrics"
        if "METRICS_PORT" in env
        else "",
    )


def start_floor(
    processes: Processes,
    python: Path,
    dsn: str,
    pool_size: int,
    log: Path,
    *,
    name: str = "floor",
    **extra_env: str,
) -> Server:
    """Start the floor app under uvicorn, one worker, with the project's Python."""
    port = free_port()
    env = project_env(
        FLOOR_DATABASE_URL=dsn,
        FLOOR_POOL_SIZE=str(pool_size),
        FLOOR_APPLICATION_NAME=FLOOR_APP_NAME,
        **extra_env,
    )
    command: list[str | Path] = [
        python, "-m", "uvicorn", "floor_app:app", "--app-dir", BENCH_DIR,
        "--host", PG_HOST, "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = processes.start(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    return Server(
        name=name,
        process=process,
        url=f"http://{PG_HOST}:{port}",
        ready_path="/products/1",
        log=log,
        application_name=FLOOR_APP_NAME,
        database=dsn.rsplit("/", 1)[1],
        pool=f"asyncpg pool {pool_size} fixed",
    )


# ---------------------------------------------------------------------------- load


@dataclass
class WrkResult:
    """What one wrk run measured."""

    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx: int
    wrk_cpu_seconds: float
    # The highest id the script asked for, in sequential order (see product_by_id.lua).
    last_id: int = 0

    @property
    def rps(self) -> float:
        """Requests answered per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        """Connect, read and write errors (timeouts counted apart)."""
        return self.connect_errors + self.read_errors + self.write_errors


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int,
    timeout_seconds: float,
    ids: Mapping[str, str] | None = None,
) -> WrkResult:
    """Drive `url` with wrk and the product-id script; returns the parsed summary.

    ids: the script's BENCH_* settings (range, order); by default a random id in 1..10,000.
    """
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
        f"--timeout={timeout_seconds:g}s", "--latency", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(ids or {})}
    )
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    # wait4 rather than wait: it also tells how much CPU wrk itself used.
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{output[-3000:]}")
    data = json.loads(match.group(1))
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        connect_errors=data["connect"],
        read_errors=data["read"],
        write_errors=data["write"],
        timeouts=data["timeout"],
        non_2xx=data["non_2xx_3xx"],
        wrk_cpu_seconds=usage.ru_utime + usage.ru_stime,
        last_id=data.get("last_id", 0),
    )


def drive(
    server: Server, args: argparse.Namespace, *, connections: int, seconds: float
) -> WrkResult:
    """run_wrk against a server with the command line's threads and timeout."""
    return run_wrk(
        server.url,
        connections=connections,
        seconds=seconds,
        threads=args.threads,
        timeout_seconds=args.wrk_timeout,
    )


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the worker, PostgreSQL and the whole host."""

    app: float
    app_kernel: float
    postgres: float
    host_busy: float
    host_stolen: float
    host_total: float

    @classmethod
    def take(cls, worker: int) -> CpuSnapshot:
        """Read the counters now."""
        busy, stolen, total = host_cpu_seconds()
        return cls(
            app=cpu_seconds(worker),
            app_kernel=cpu_seconds(worker, system_only=True),
            postgres=postgres_cpu_seconds(),
            host_busy=busy,
            host_stolen=stolen,
            host_total=total,
        )

    def __sub__(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            app=self.app - earlier.app,
            app_kernel=self.app_kernel - earlier.app_kernel,
            postgres=self.postgres - earlier.postgres,
            host_busy=self.host_busy - earlier.host_busy,
            host_stolen=self.host_stolen - earlier.host_stolen,
            host_total=self.host_total - earlier.host_total,
        )


@dataclass
class Run:
    """One measured wrk run of a stack, with the CPU it cost and the connections it opened."""

    wrk: WrkResult
    cpu: CpuSnapshot
    connections_opened: int
    backends_mean: float
    backends_max: int

    def per_request_ms(self, cpu_seconds: float) -> float:
        """CPU milliseconds per answered request."""
        return cpu_seconds * 1000 / self.wrk.requests if self.wrk.requests else 0.0


@dataclass
class StackResult:
    """Everything measured for one stack."""

    server: Server
    steady: Run
    burst: Run
    connections_opened_total: int = 0
    profile: Path | None = None


def measured_run(
    server: Server, python: Path, args: argparse.Namespace, *, connections: int, seconds: float
) -> Run:
    """One wrk run while sampling backends, connections opened, and CPU of app, PostgreSQL, host."""
    worker = server.worker_pid()
    sessions_before = pg_admin(python, "sessions", server.database)["sessions"]
    watcher = subprocess.Popen(
        [str(python), str(PG_ADMIN), "watch", server.database, f"{seconds:g}"],
        stdout=subprocess.PIPE,
        env=project_env(),
    )
    try:
        before = CpuSnapshot.take(worker)
        result = drive(server, args, connections=connections, seconds=seconds)
        used = CpuSnapshot.take(worker) - before
        watched, _ = watcher.communicate(timeout=seconds + 30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    time.sleep(STATS_SETTLE_SECONDS)
    sessions_after = pg_admin(python, "sessions", server.database)["sessions"]
    backends = json.loads(watched or b"{}").get(server.application_name, {})
    return Run(
        wrk=result,
        cpu=used,
        connections_opened=sessions_after - sessions_before,
        backends_mean=float(backends.get("mean", 0.0)),
        backends_max=int(backends.get("max", 0)),
    )


def profile_worker(
    server: Server, args: argparse.Namespace, directory: Path, processes: Processes
) -> Path:
    """Sample the worker with py-spy (non-blocking, collapsed stacks) under the c=64 load."""
    output = directory / f"{server.name}.collapsed.txt"
    command: list[str | Path] = [
        args.py_spy, "record", "--pid", str(server.worker_pid()),
        "--duration", f"{args.profile_seconds:g}", "--rate", "250", "--nonblocking",
        "--nolineno", "--format", "raw", "--output", output,
    ]  # fmt: skip
    recorder = processes.start(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    drive(server, args, connections=args.connections, seconds=args.profile_seconds)
    _, errors = recorder.communicate(timeout=60)
    processes.stop(recorder)
    if not output.exists():
        raise SystemExit(f"py-spy wrote no profile: {errors.decode(errors='replace')[-2000:]}")
    return output


def benchmark(
    server: Server, python: Path, args: argparse.Namespace, processes: Processes
) -> StackResult:
    """Warm up, then the steady run and the burst run; optionally profile; then stop."""
    log(f"{server.name}: ready at {server.url}; warm-up {args.warmup:g} s")
    total_before = pg_admin(python, "sessions", server.database)["sessions"]
    drive(server, args, connections=args.connections, seconds=args.warmup)
    time.sleep(STATS_SETTLE_SECONDS)
    log(f"{server.name}: -c{args.connections} for {args.duration:g} s")
    steady = measured_run(server, python, args, connections=args.connections, seconds=args.duration)
    log(f"{server.name}: -c{args.burst_connections} for {args.duration:g} s")
    burst = measured_run(
        server, python, args, connections=args.burst_connections, seconds=args.duration
    )
    result = StackResult(server=server, steady=steady, burst=burst)
    if args.profile_dir is not None:
        log(f"{server.name}: py-spy for {args.profile_seconds:g} s at -c{args.connections}")
        result.profile = profile_worker(server, args, args.profile_dir, processes)
    processes.stop(server.process)
    time.sleep(STATS_SETTLE_SECONDS)
    total_after = pg_admin(python, "sessions", server.database)["sessions"]
    result.connections_opened_total = total_after - total_before
    return result


# ---------------------------------------------------------------------------- report


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so that it also reads well as plain text."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def machine_info(versions: dict[str, str], pg_version: str) -> list[str]:
    """Lines that say where and with what the figures were taken."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    describe = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    memory = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return [
        f"date:       {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine:    {len(os.sched_getaffinity(0))} cores (nproc), "
        f"{model.group(1).strip() if model else platform.processor()}, "
        f"{int(memory.group(1)) // 1024**2 if memory else '?'} GiB, {platform.platform()}",
        f"postgresql: {pg_version} on {PG_HOST}:{PG_PORT}",
        f"keel:       {describe or 'unknown'}",
        "libraries:  " + ", ".join(f"{name} {version}" for name, version in versions.items()),
    ]


def profile_summary(path: Path, top: int = 15) -> list[str]:
    """Where the worker's CPU went, from py-spy's collapsed stacks.

    Self time by library and by function, and the inclusive time of the service's own functions
    (its middleware, routes and services). SQLAlchemy runs its I/O inside greenlets, whose stacks
    py-spy shows without their callers: those samples are counted apart.
    """
    by_library: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    own_inclusive: collections.Counter[str] = collections.Counter()
    in_greenlets = total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        by_library[library_of(frames[-1])] += count
        if library_of(frames[0]) == "sqlalchemy":
            in_greenlets += count
        for frame in set(frames):
            if library_of(frame) == PACKAGE:
                own_inclusive[frame] += count
    if not total:
        return [f"{path}: no samples"]

    def share(counts: collections.Counter[str], n: int) -> list[str]:
        return [f"  {100 * c / total:5.1f}%  {name}" for name, c in counts.most_common(n)]

    lines = [
        f"{path} ({total} samples of the worker while on CPU)",
        "self time by library:",
        *share(by_library, 10),
        f"top {top} functions by self time:",
        *share(self_time, top),
    ]
    if own_inclusive:
        lines.append(
            f"the service's own functions, inclusive (leaving out the {in_greenlets / total:.1%}"
            " of samples inside SQLAlchemy's greenlets, whose callers py-spy does not see):"
        )
        lines.extend(share(own_inclusive, top))
    return lines


def library_of(frame: str) -> str:
    """The top-level package of a py-spy frame like 'handle (starlette/routing.py)'."""
    match = re.search(r"\(([^)]*)\)$", frame)
    path = match.group(1) if match else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        return "stdlib"
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "?"
    first = parts[0]
    return first.removesuffix(".py") if len(parts) == 1 and not path.startswith("<") else first


def results_table(service: StackResult, floor: StackResult, burst: int) -> str:
    """The headline: req/s, p50, p99 and the ratio to the floor at the steady concurrency."""
    rows = []
    for stack in (floor, service):
        steady, peak = stack.steady.wrk, stack.burst.wrk
        ratio = steady.rps / floor.steady.wrk.rps if floor.steady.wrk.rps else 0.0
        rows.append(
            [
                stack.server.name,
                f"{steady.rps:,.0f}",
                f"{steady.p50_ms:.1f} ms",
                f"{steady.p99_ms:.1f} ms",
                f"{ratio:.2f}",
                f"{peak.timeouts} timeouts, {peak.socket_errors} errors, {peak.non_2xx} non-2xx",
            ]
        )
    headers = ["stack", "req/s", "p50", "p99", "x floor (req/s)", f"errors at c={burst}"]
    return table(headers, rows)


def cpu_table(service: StackResult, floor: StackResult) -> str:
    """CPU milliseconds per request of the worker, PostgreSQL and wrk, for every measured run."""
    rows = []
    for stack in (floor, service):
        for measured in (stack.steady, stack.burst):
            cpu, per_request = measured.cpu, measured.per_request_ms
            rows.append(
                [
                    stack.server.name,
                    f"c={measured.wrk.connections}",
                    f"{measured.wrk.rps:,.0f}",
                    f"{measured.wrk.p99_ms:.1f} / {measured.wrk.max_ms:.0f} ms",
                    f"{per_request(cpu.app):.3f} ({per_request(cpu.app_kernel):.3f})",
                    f"{per_request(cpu.postgres):.3f}",
                    f"{per_request(measured.wrk.wrk_cpu_seconds):.3f}",
                    f"{cpu.host_busy / cpu.host_total:.0%} ({cpu.host_stolen / cpu.host_total:.0%})"
                    if cpu.host_total
                    else "-",
                ]
            )
    headers = [
        "stack",
        "run",
        "req/s",
        "p99 / max",
        "app (kernel)",
        "PostgreSQL",
        "wrk",
        "host busy (steal)",
    ]
    return table(headers, rows)


def connections_table(service: StackResult, floor: StackResult, c: int, burst: int) -> str:
    """Backends each stack held, and connections it opened (pool churn), per run."""

    def opened(run: Run) -> str:
        return f"{run.connections_opened} ({run.connections_opened / run.wrk.seconds:.1f}/s)"

    rows = [
        [
            stack.server.name,
            stack.server.pool,
            f"{stack.steady.backends_mean:.1f} / {stack.steady.backends_max}",
            f"{stack.burst.backends_mean:.1f} / {stack.burst.backends_max}",
            opened(stack.steady),
            opened(stack.burst),
            str(stack.connections_opened_total),
        ]
        for stack in (floor, service)
    ]
    headers = [
        "stack",
        "pool",
        f"backends c={c} mean / max",
        f"backends c={burst} mean / max",
        f"opened during c={c}",
        f"opened during c={burst}",
        "opened, ready to stop",
    ]
    return table(headers, rows)


def report(
    service: StackResult, floor: StackResult, args: argparse.Namespace, header: list[str]
) -> None:
    """Print the tables and notes on stdout."""
    c, burst = args.connections, args.burst_connections
    print()
    print("\n".join(header))
    print(
        f"load:       wrk -t{args.threads} -c{c} -d{args.duration:g}s --latency after a"
        f" {args.warmup:g} s warm-up, then -c{burst} -d{args.duration:g}s; random id in"
        f" 1..{PRODUCTS:,} per request; wrk --timeout {args.wrk_timeout:g}s"
    )
    print(
        f"note:       wrk, the app and PostgreSQL share these {len(os.sched_getaffinity(0))}"
        " cores; compare the stacks with each other, not with other machines"
    )
    print()
    print(f"GET /products/{{id}}, cache {args.cache}, one worker, c={c} (errors at c={burst})")
    print(results_table(service, floor, burst))
    print()
    print("CPU per request (ms) of the worker (its kernel share in brackets), PostgreSQL and wrk")
    print(cpu_table(service, floor))
    print()
    print("PostgreSQL connections: backends open (sampled every 0.2 s) and connections opened")
    print(connections_table(service, floor, c, burst))
    for stack in (service, floor):
        if stack.profile is not None:
            print()
            print("\n".join(profile_summary(stack.profile)))


# ---------------------------------------------------------------------------- main


@contextlib.contextmanager
def bench_database(python: Path) -> Iterator[str]:
    """A fresh database for this run, dropped afterwards even when the run fails."""
    name = f"keel_bench_{os.getpid()}"
    pg_admin(python, "create", name)
    try:
        yield name
    finally:
        with contextlib.suppress(SystemExit, subprocess.SubprocessError, OSError):
            pg_admin(python, "drop", name)
            log(f"dropped database {name}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", choices=["none", "memory"], default="none")
    parser.add_argument("--vcs-ref", default="HEAD", help="template ref; HEAD includes local edits")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--burst-connections", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk's --timeout, seconds")
    parser.add_argument(
        "--profile-dir", type=Path, help="also sample each worker with py-spy into this directory"
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the rendered project and logs")
    parser.add_argument(
        "--floor-pool-size",
        type=int,
        help=f"the floor's pool size (default: the service's pool_size, or {FALLBACK_POOL_SIZE})",
    )
    parser.add_argument(
        "--project",
        type=Path,
        help="benchmark this already generated (perhaps hand-edited) project instead of rendering",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the service, e.g. DB_CPU_CORES=32; repeatable",
    )
    return parser.parse_args(argv)


def service_env(
    database_url: str, metrics_dir: Path, settings: Sequence[str] = ()
) -> dict[str, str]:
    """The service's environment: one worker in production, on a free port; then NAME=VALUE."""
    env = project_env(
        HOST=PG_HOST,
        PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        DATABASE_URL=database_url,
        DB_APPLICATION_NAME=SERVICE_APP_NAME,
        ENVIRONMENT="production",
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    for setting in settings:
        name, _, value = setting.partition("=")
        env[name] = value
    return env


def migrate_and_seed(
    python: Path, project: Path, env: dict[str, str], dsn: str, products: int
) -> None:
    """Create the project's tables with its own migrations, then fill the catalog."""
    log(f"database {dsn.rsplit('/', 1)[1]}: alembic upgrade head, seed {products:,} products")
    run([python, "-m", "alembic", "upgrade", "head"], cwd=project, env=env)
    pg_admin(python, "seed", dsn, "--categories", str(CATEGORIES), "--products", str(products))


def serve_and_measure(
    args: argparse.Namespace, project: Path, python: Path, workdir: Path
) -> tuple[StackResult, StackResult, Budget]:
    """Seed a fresh database, then benchmark the service and the floor one after the other."""
    with bench_database(python) as database, Processes() as processes:
        url, dsn = database_urls(database)
        env = service_env(url, workdir / "metrics", args.env)
        migrate_and_seed(python, project, env, dsn, PRODUCTS)
        budget = service_budget(python, project, env)
        log(budget.line)

        service = start_service(processes, project, env, workdir / "service.log", budget)
        wait_until_ready(service)
        service_result = benchmark(service, python, args, processes)

        floor_pool = args.floor_pool_size or budget.pool_size or FALLBACK_POOL_SIZE
        floor = start_floor(processes, python, dsn, floor_pool, workdir / "floor.log")
        wait_until_ready(floor)
        floor_result = benchmark(floor, python, args, processes)
    return service_result, floor_result, budget


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, seed, serve, load, report; clean up whatever happens."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian), then run again")
    if args.profile_dir is not None:
        if shutil.which(args.py_spy) is None:
            raise SystemExit("--profile-dir needs py-spy: uv tool install py-spy, or --py-spy PATH")
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        args.profile_dir = args.profile_dir.resolve()
    stop_on_sigterm()

    with scratch_directory("keel-bench-", keep=args.keep) as workdir:
        if args.project is None:
            log(f"rendering keel ({args.vcs_ref}, cache={args.cache}) into {workdir}")
            project = render(workdir, cache=args.cache, vcs_ref=args.vcs_ref)
        else:
            project = args.project.resolve()
        log(f"uv sync --python 3.11 in {project}")
        python = install(project)
        versions = package_versions(python)
        pg_version = pg_admin(python, "info")["server_version"]
        service, floor, budget = serve_and_measure(args, project, python, workdir)
        header = [*machine_info(versions, pg_version), f"service:    {budget.line}"]
        if args.project is not None:
            header.append(f"project:    {project} (given, not rendered)")
        if args.env:
            header.append(f"service env: {' '.join(args.env)}")
        report(service, floor, args, header)


@contextlib.contextmanager
def scratch_directory(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A temporary directory for the projects and logs, removed at the end unless `keep`."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's main; Ctrl-C ends it with a short message instead of a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        # Every server was stopped and the database dropped on the way out.
        sys.exit("interrupted")


if __name__ == "__main__":
    run_main(main)
