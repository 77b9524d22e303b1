"""What every benchmark here is built from, so that each script holds only its stacks and figures.

- projects: render keel's working tree with the benchmark's answers and install it with uv;
- processes: start servers in their own process groups, stop them all on the way out;
- servers: the generated service under gunicorn, or an app under uvicorn, on a free port, started
  once its readiness URL answers 200;
- CPU: of one process from /proc, of a whole database server (PostgreSQL, MariaDB), of the host
  (stolen time too);
- load: wrk driven by product_by_id.lua, its summary parsed; stacks measured in interleaved
  rounds so that all see the same neighbours;
- report: Markdown tables, the ratio against a baseline of the same run, where and with what.

Progress goes to stderr and the report to stdout, so `> figures.md` keeps only the figures.
"""

from __future__ import annotations

import argparse
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
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "product_by_id.lua"
HOST = "127.0.0.1"
# project_name "Bench Service" renders the project "bench-service" with the package below.
PROJECT_NAME, PROJECT_DIR, PACKAGE = "Bench Service", "bench-service", "bench_service"
# Every answer a benchmark does not give: one worker, so that CPU per request is one process's.
DEFAULT_ANSWERS: dict[str, Any] = {
    "project_name": PROJECT_NAME,
    "python_version": "3.11",
    "database": "postgresql",
    "cache": "none",
    "metrics": "prometheus",
    "replicas": 1,
    "web_workers": 1,
}
READY_TIMEOUT_SECONDS = 60.0

T = TypeVar("T")


# ---------------------------------------------------------------------------- progress, cleanup


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(command: Sequence[str | Path], **kwargs: Any) -> str:
    """Run a command to completion; on failure show its output and raise."""
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, command))}")
    return str(result.stdout)


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's main; Ctrl-C ends it with a short message instead of a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        # Every server was stopped and every scratch database dropped on the way out.
        sys.exit("interrupted")


def stop_on_sigterm() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit so that every cleanup `finally` runs."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def require_tools(*tools: str) -> None:
    """Stop at once, saying how to install it, when a command the benchmark runs is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install -y {tool})")


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


# ---------------------------------------------------------------------------- projects


def project_env(**extra: str) -> dict[str, str]:
    """The environment for commands in the generated project: not keel's own virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def render(destination: Path, *, vcs_ref: str, **answers: Any) -> Path:
    """Render keel with DEFAULT_ANSWERS, `answers` overriding them; returns the project."""
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
            data={**DEFAULT_ANSWERS, **answers},
            defaults=True,
            unsafe=True,
            vcs_ref=vcs_ref,
            quiet=True,
        )
    return project


def install(project: Path) -> Path:
    """uv sync the generated project; returns its virtualenv's Python."""
    log(f"uv sync --python 3.11 in {project}")
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    run([uv, "sync", "--python", "3.11", "--quiet"], cwd=project, env=project_env())
    python = project / ".venv" / "bin" / "python"
    # A virtualenv copied along with a project still imports the original's code.
    imported = run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"])
    if not Path(imported.strip()).is_relative_to(project):
        raise SystemExit(f"{project}/.venv imports {imported.strip()}: delete that .venv")
    return python


@dataclass(frozen=True)
class Project:
    """A generated project, installed: its directory and its virtualenv's Python."""

    path: Path
    python: Path


def prepare(
    destination: Path, *, vcs_ref: str, given: Path | None = None, **answers: Any
) -> Project:
    """Render keel into `destination` (or take the `given`, perhaps hand-edited, project) and
    install it."""
    if given is not None:
        project = given.resolve()
    else:
        destination.mkdir(parents=True, exist_ok=True)
        described = ", ".join(f"{name}={value}" for name, value in answers.items())
        log(f"rendering keel ({vcs_ref}{', ' if described else ''}{described}) into {destination}")
        project = render(destination, vcs_ref=vcs_ref, **answers)
    return Project(project, install(project))


def package_versions(python: Path, names: Sequence[str]) -> dict[str, str]:
    """Versions of these libraries, and of Python, in a project's virtualenv."""
    code = (
        "import importlib.metadata as m, json, sys;"
        f"print(json.dumps({{p: m.version(p) for p in {list(names)!r}}}"
        " | {'python': sys.version.split()[0]}))"
    )
    return dict(json.loads(run([python, "-c", code], env=project_env())))


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running stack under test."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    ready_path: str = "/ready"
    is_gunicorn: bool = False
    # gunicorn's master serves the service's metrics apart from the API's port.
    metrics_url: str = ""
    # For a stack that reads from PostgreSQL: its database and application_name there, and how
    # it pools its connections, in the words of the tables.
    database: str = ""
    application_name: str = ""
    pool: str = ""

    def worker_pid(self) -> int:
        """The process that serves requests: gunicorn's first worker, or the server itself."""
        if not self.is_gunicorn:
            return self.process.pid
        children = children_of(self.process.pid)
        if not children:
            raise SystemExit(f"{self.name}: gunicorn has no worker; see {self.log}")
        return children[0]


def wait_until_ready(server: Server) -> Server:
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
                return server
        time.sleep(0.2)
    tail = server.log.read_text(errors="replace")[-4000:]
    raise SystemExit(f"{server.name} did not become ready; its log ends with:\n{tail}")


def start_server(
    processes: Processes,
    name: str,
    command: Sequence[str | Path],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    **fields: Any,
) -> Server:
    """Start a server listening on `port`, its output in `log_path`; returns once it is ready.

    fields: the rest of the Server (ready_path, is_gunicorn, metrics_url, database, ...).
    """
    with log_path.open("wb") as output:
        process = processes.start(
            command, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT
        )
    return wait_until_ready(
        Server(name=name, process=process, url=f"http://{HOST}:{port}", log=log_path, **fields)
    )


def start_gunicorn(
    processes: Processes,
    name: str,
    project: Path,
    env: Mapping[str, str],
    log_path: Path,
    *options: str,
    **fields: Any,
) -> Server:
    """The generated project under its own gunicorn.conf.py, on env's HOST and PORT.

    options: gunicorn's, e.g. `--pythonpath DIR module:factory()` to serve another app.
    """
    metrics_port = env.get("METRICS_PORT")
    return start_server(
        processes,
        name,
        # python -m, not the venv's gunicorn script, whose #! may name another virtualenv.
        [project / ".venv" / "bin" / "python", "-m", "gunicorn", *options],
        port=int(env["PORT"]),
        log_path=log_path,
        env=env,
        cwd=project,
        is_gunicorn=True,
        metrics_url=f"http://{HOST}:{metrics_port}/metrics" if metrics_port else "",
        **fields,
    )


def start_uvicorn(
    processes: Processes,
    name: str,
    python: Path,
    app: str,
    env: Mapping[str, str],
    log_path: Path,
    **fields: Any,
) -> Server:
    """An app of benchmarks/ (`module:attribute`) under uvicorn, one worker, uvloop and
    httptools, run by `python` (a generated project's, for the same libraries)."""
    port = free_port()
    command: list[str | Path] = [
        python, "-m", "uvicorn", app, "--app-dir", BENCH_DIR,
        "--host", HOST, "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return start_server(processes, name, command, port=port, log_path=log_path, env=env, **fields)


# ---------------------------------------------------------------------------- CPU


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


def server_cpu_seconds(*names: str) -> float:
    """CPU time of a database server, every process whose command is one of `names`: the live
    ones, and those that ended (their parent, if not the server itself, reaped them)."""
    servers: dict[int, int] = {}  # pid -> parent pid, of every process of the server
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in names:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                servers[int(entry.name)] = int(stat[1])
    total = 0.0
    for pid, parent in servers.items():
        with contextlib.suppress(OSError):
            # The postmaster reaps every backend, so its children's time covers the ended ones.
            total += cpu_seconds(pid, with_reaped_children=parent not in servers)
    return total


def postgres_cpu_seconds() -> float:
    """CPU time of the whole PostgreSQL server: live processes and the backends that ended."""
    return server_cpu_seconds("postgres")


def mariadb_cpu_seconds() -> float:
    """CPU time of the MariaDB or MySQL server: one process, a thread per connection."""
    return server_cpu_seconds("mariadbd", "mysqld")


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


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the worker, the database server and the whole host."""

    app: float
    app_kernel: float
    database: float
    host_busy: float
    host_stolen: float
    host_total: float

    @classmethod
    def take(
        cls, worker: int, database: Callable[[], float] | None = postgres_cpu_seconds
    ) -> CpuSnapshot:
        """Read the counters now; `database` reads the server's CPU (None: no server, as for
        SQLite, which runs inside the worker and is counted in its CPU)."""
        busy, stolen, total = host_cpu_seconds()
        return cls(
            app=cpu_seconds(worker),
            app_kernel=cpu_seconds(worker, system_only=True),
            database=database() if database else 0.0,
            host_busy=busy,
            host_stolen=stolen,
            host_total=total,
        )

    def __sub__(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            app=self.app - earlier.app,
            app_kernel=self.app_kernel - earlier.app_kernel,
            database=self.database - earlier.database,
            host_busy=self.host_busy - earlier.host_busy,
            host_stolen=self.host_stolen - earlier.host_stolen,
            host_total=self.host_total - earlier.host_total,
        )

    def steal(self) -> str:
        """The share of the host's time the hypervisor gave to other guests meanwhile."""
        return f"{self.host_stolen / self.host_total:.0%}" if self.host_total else "-"


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

    def per_request_ms(self, cpu_seconds: float) -> float:
        """CPU milliseconds per answered request."""
        return cpu_seconds * 1000 / self.requests if self.requests else 0.0


def parse_wrk(output: str, *, connections: int, wrk_cpu_seconds: float = 0.0) -> WrkResult:
    """The summary product_by_id.lua prints as its last line, "WRK_JSON {...}"."""
    match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
    if match is None:
        raise ValueError("no WRK_JSON line in wrk's output")
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
        wrk_cpu_seconds=wrk_cpu_seconds,
        last_id=data.get("last_id", 0),
    )


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int,
    timeout_seconds: float,
    script_env: Mapping[str, str] | None = None,
) -> WrkResult:
    """Drive `url` with wrk and product_by_id.lua; returns the parsed summary.

    script_env: the script's BENCH_* settings (ids, order, path); by default GET /products/{id}
    with a random id in 1..10,000.
    """
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
        f"--timeout={timeout_seconds:g}s", "--latency", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(script_env or {})},
    )
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    # wait4 rather than wait: it also tells how much CPU wrk itself used.
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    try:
        if process.returncode != 0:
            raise ValueError(f"wrk exited with {process.returncode}")
        return parse_wrk(
            output, connections=connections, wrk_cpu_seconds=usage.ru_utime + usage.ru_stime
        )
    except ValueError as error:
        raise SystemExit(f"wrk failed ({error}):\n{output[-3000:]}") from None


def add_load_arguments(parser: argparse.ArgumentParser, *, duration: float = 15.0) -> None:
    """wrk's options, the same in every benchmark: --connections, --threads, --duration, ..."""
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=duration, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk's --timeout, seconds")


def add_project_arguments(parser: argparse.ArgumentParser) -> None:
    """--vcs-ref and --keep, for a benchmark that renders keel."""
    parser.add_argument("--vcs-ref", default="HEAD", help="template ref; HEAD includes local edits")
    parser.add_argument("--keep", action="store_true", help="keep the rendered projects and logs")


def drive(
    server: Server,
    args: argparse.Namespace,
    seconds: float,
    *,
    connections: int | None = None,
    script_env: Mapping[str, str] | None = None,
) -> WrkResult:
    """run_wrk against a server with the command line's threads, timeout and (by default)
    connections."""
    return run_wrk(
        server.url,
        connections=connections or args.connections,
        seconds=seconds,
        threads=args.threads,
        timeout_seconds=args.wrk_timeout,
        script_env=script_env,
    )


def interleaved_rounds(
    names: Sequence[str], rounds: int, measure: Callable[[str], T]
) -> dict[str, list[T]]:
    """Measure every stack `rounds` times, taking turns in an order that rotates each round,
    so that all see the same neighbours and none is always first after another's load."""
    results: dict[str, list[T]] = {name: [] for name in names}
    for number in range(rounds):
        for offset in range(len(names)):
            name = names[(number + offset) % len(names)]
            log(f"round {number + 1}/{rounds}: {name}")
            results[name].append(measure(name))
    return results


# ---------------------------------------------------------------------------- report


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so that it also reads well as plain text."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def ratio(value: float, baseline: float, digits: int = 2) -> str:
    """`value` as a multiple of the same run's baseline, or a dash when the baseline is 0."""
    return f"{value / baseline:.{digits}f}" if baseline else "-"


def machine_info(
    versions: Mapping[str, str], services: Mapping[str, str] | None = None
) -> list[str]:
    """Lines that say where and with what the figures were taken.

    services: the servers the stacks use, e.g. {"postgresql": "16.4 on 127.0.0.1:5432"}.
    """
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
        *(f"{name + ':':<11} {value}" for name, value in (services or {}).items()),
        f"keel:       {describe or 'unknown'}",
        "libraries:  " + ", ".join(f"{name} {version}" for name, version in versions.items()),
    ]
