"""Benchmark: one product by id on MySQL and SQLite, the service against a floor per engine.

For each engine, renders keel (the working tree, uncommitted changes included) into a temporary
directory with database=mysql or database=sqlite and cache none, installs it with uv, creates a
scratch database (MySQL: a database of the run's own on 127.0.0.1:3306, dropped at the end;
SQLite: a file in the run's temporary directory), migrates it with the project's own migrations
and seeds the 100 categories and 10,000 products db_read.py reads on PostgreSQL. Then it serves
GET /products/{id} two ways, one worker each, one at a time:

- service: the generated project under its own gunicorn.conf.py (one worker on asyncio's loop,
  httptools), production settings, cache off, the full middleware stack with Prometheus: the
  pool its connection budget sizes (SQLAlchemy, asyncmy or aiosqlite);
- floor: benchmarks/floor_app.py with FLOOR_ENGINE set, bare Starlette on the driver the project
  uses, the same query and JSON, under uvicorn (uvloop, httptools) with the project's
  virtualenv. MySQL: an asyncmy pool as large as the service's, in autocommit (one round trip a
  read). SQLite: 4 read-only aiosqlite connections taken in turn; 4 served the most in a quick
  comparison of 1, 2, 4, 8 and 18 (the service's pool) on this machine: one connection
  serialises every read on its one thread, and many put threads to fight for the GIL.

Each is driven by wrk with a random id per request: a warm-up, a measured run at -c64 and a burst
at -c256 that counts timeouts, socket errors and non-2xx answers. The script prints, per engine,
req/s, p50, p99, the ratio to that engine's floor, the worker's CPU per request and the database
server's (MariaDB's whole mariadbd process, whoever's queries it runs; none for SQLite, which
runs inside the worker and is counted in its CPU). It writes docs/charts/engine_read.png. It
asserts nothing: it is a measurement to record.

Runs are short (10 s measured, 3 s warm-up) so that both engines take about 2.5 minutes; --rounds N
measures each stack N times, in turns.

Run from the repository root:  uv run python benchmarks/engine_read.py   (about 2.5 minutes)
Needs: wrk, uv, Python 3.11, MariaDB or MySQL on 127.0.0.1:3306 with root and an empty password
(bash ../shared/services.sh starts it). --engines sqlite needs no server.

Options worth knowing (--help lists them all):
    --engines mysql,sqlite  which engines, in this order
    --rounds N              measure each stack N times, taking turns
    --chart PATH            where to write the chart ('' for none)
    --keep                  keep the rendered projects, the SQLite file and the servers' logs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charts import Panel, add_chart_argument, write_chart
from harness import (
    BENCH_DIR,
    HOST,
    CpuSnapshot,
    Processes,
    Project,
    Server,
    WrkResult,
    add_load_arguments,
    add_project_arguments,
    drive,
    interleaved_rounds,
    log,
    machine_info,
    mariadb_cpu_seconds,
    package_versions,
    prepare,
    project_env,
    ratio,
    require_tools,
    run,
    run_main,
    scratch_directory,
    start_uvicorn,
    stop_on_sigterm,
    table,
)
from pg_stacks import CATEGORIES, Budget, service_budget, service_env, start_service

ENGINES = ("mysql", "sqlite")
LABELS = {"mysql": "MySQL", "sqlite": "SQLite"}
DRIVERS = {"mysql": "asyncmy", "sqlite": "aiosqlite"}
# The database server's CPU, where there is a server apart from the worker.
SERVER_CPU: dict[str, Callable[[], float] | None] = {
    "mysql": mariadb_cpu_seconds,
    "sqlite": None,
}
STACKS = ("floor", "service")
PRODUCTS = 10_000
ENGINE_ADMIN = BENCH_DIR / "engine_admin.py"
MYSQL_ADDRESS = f"root@{HOST}:3306"
# What engine_admin.py's info connects to.
SERVER_URLS = {"mysql": f"mysql+asyncmy://{MYSQL_ADDRESS}/", "sqlite": "sqlite://"}
# The libraries on the read path, whose versions head the report (the driver is added per engine).
VERSIONS_OF = ("fastapi", "starlette", "pydantic", "sqlalchemy", "uvicorn", "gunicorn")


# ---------------------------------------------------------------------------- databases


def engine_admin(python: Path, *args: str) -> Any:
    """Run one benchmarks/engine_admin.py command with the project's Python; returns its JSON."""
    return json.loads(run([python, ENGINE_ADMIN, *args], env=project_env()))


@dataclass(frozen=True)
class Scratch:
    """A scratch database of the run: the service's SQLAlchemy URL and the floor's."""

    url: str
    floor_url: str


@contextlib.contextmanager
def scratch_database(engine: str, python: Path, directory: Path) -> Iterator[Scratch]:
    """A fresh, empty database of the engine, dropped (or its file removed) afterwards."""
    if engine == "mysql":
        address = f"{MYSQL_ADDRESS}/keel_bench_{os.getpid()}"
        scratch = Scratch(f"mysql+asyncmy://{address}", f"mysql://{address}")
    else:
        path = directory / "bench.db"
        scratch = Scratch(f"sqlite+aiosqlite:///{path}", str(path))
    engine_admin(python, "create", scratch.url)
    try:
        yield scratch
    finally:
        with contextlib.suppress(SystemExit, subprocess.SubprocessError, OSError):
            dropped = engine_admin(python, "drop", scratch.url)["dropped"]
            log(f"dropped {dropped}")


# ---------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One wrk run of a stack and the CPU it cost."""

    wrk: WrkResult
    cpu: CpuSnapshot

    def per_request_ms(self, cpu_seconds: float) -> float:
        """CPU milliseconds per answered request."""
        return self.wrk.per_request_ms(cpu_seconds)


@dataclass
class StackRun:
    """One stack of one engine, measured once: the steady run and the burst."""

    engine: str
    stack: str  # "floor" or "service"
    pool: str
    steady: Measured
    burst: Measured

    @property
    def name(self) -> str:
        """How the tables and the chart call it, e.g. "MySQL floor"."""
        return f"{LABELS[self.engine]} {self.stack}"


def measured_run(
    server: Server, engine: str, args: argparse.Namespace, connections: int
) -> Measured:
    """One wrk run, with the CPU of the worker, of the database server and of the host."""
    worker = server.worker_pid()
    before = CpuSnapshot.take(worker, SERVER_CPU[engine])
    result = drive(server, args, args.duration, connections=connections)
    return Measured(result, CpuSnapshot.take(worker, SERVER_CPU[engine]) - before)


@dataclass
class EngineResult:
    """What one engine's part of the run measured, and with what."""

    rounds: list[list[StackRun]]  # each round: the floor, then the service
    versions: dict[str, str]
    server: str  # the database's version and where it is
    budget_line: str  # the service's "connection budget: ..." line


def measure_engine(engine: str, args: argparse.Namespace, workdir: Path) -> EngineResult:
    """Render, seed, then measure the floor and the service of one engine in turns."""
    directory = workdir / engine
    project = prepare(directory, vcs_ref=args.vcs_ref, database=engine, cache="none")
    versions = package_versions(project.python, (*VERSIONS_OF, DRIVERS[engine]))
    server_version = engine_admin(project.python, "info", SERVER_URLS[engine])["server_version"]
    where = f"on {MYSQL_ADDRESS.split('@')[1]}" if engine == "mysql" else f"a file in {directory}"
    with (
        scratch_database(engine, project.python, directory) as scratch,
        Processes() as processes,
    ):
        env = service_env(scratch.url, directory / "metrics")
        budget = migrate_and_seed(project, env, scratch)
        floor_size = (
            budget.floor_pool_size() if engine == "mysql" else args.sqlite_floor_connections
        )
        floor_pool = f"{DRIVERS[engine]}, {floor_size} connections"

        def start(stack: str) -> Server:
            log_path = directory / f"{stack}.log"
            if stack == "service":
                return start_service(processes, project.path, env, log_path, budget)
            floor_env = project_env(
                FLOOR_ENGINE=engine,
                FLOOR_DATABASE_URL=scratch.floor_url,
                FLOOR_POOL_SIZE=str(floor_size),
            )
            return start_uvicorn(
                processes, "floor", project.python, "floor_app:app", floor_env, log_path,
                ready_path="/products/1", pool=floor_pool,
            )  # fmt: skip

        def measure(stack: str) -> StackRun:
            server = start(stack)
            try:
                log(f"{engine} {stack}: ready at {server.url}; warm-up {args.warmup:g} s")
                drive(server, args, args.warmup)
                log(f"{engine} {stack}: -c{args.connections}, then -c{args.burst_connections}")
                steady = measured_run(server, engine, args, args.connections)
                burst = measured_run(server, engine, args, args.burst_connections)
            finally:
                processes.stop(server.process)
            pool = budget.describe_pool() if stack == "service" else floor_pool
            return StackRun(engine, stack, pool, steady, burst)

        measured = interleaved_rounds(STACKS, args.rounds, measure)
    rounds = [[measured[stack][number] for stack in STACKS] for number in range(args.rounds)]
    return EngineResult(rounds, versions, f"{server_version} {where}", budget.line)


def migrate_and_seed(project: Project, env: dict[str, str], scratch: Scratch) -> Budget:
    """The project's tables by its own migrations, the catalog, and the service's pool."""
    log(f"{scratch.url}: alembic upgrade head, seed {PRODUCTS:,} products")
    run([project.python, "-m", "alembic", "upgrade", "head"], cwd=project.path, env=env)
    engine_admin(
        project.python,
        "seed",
        scratch.url,
        "--categories",
        str(CATEGORIES),
        "--products",
        str(PRODUCTS),
    )
    budget = service_budget(project.python, project.path, env)
    log(budget.line)
    return budget


# ---------------------------------------------------------------------------- report


def engine_table(rounds: Sequence[Sequence[StackRun]], args: argparse.Namespace) -> str:
    """One engine: each round's floor and service, the ratio to the same round's floor."""
    burst = args.burst_connections
    rows = []
    for number, (floor, *others) in enumerate(rounds, start=1):
        for run_ in (floor, *others):
            steady, peak = run_.steady, run_.burst.wrk
            server_ms = steady.per_request_ms(steady.cpu.database)
            rows.append(
                [
                    run_.name + (f" (round {number})" if len(rounds) > 1 else ""),
                    run_.pool,
                    f"{steady.wrk.rps:,.0f}",
                    f"{steady.wrk.p50_ms:.1f} ms",
                    f"{steady.wrk.p99_ms:.1f} ms",
                    ratio(steady.wrk.rps, floor.steady.wrk.rps),
                    f"{steady.per_request_ms(steady.cpu.app):.3f}",
                    f"{server_ms:.3f}" if SERVER_CPU[run_.engine] else "-",
                    f"{peak.rps:,.0f}, p99 {peak.p99_ms:,.0f} ms",
                    f"{peak.timeouts} / {peak.socket_errors} / {peak.non_2xx}",
                ]
            )
    headers = [
        "stack",
        "pool",
        "req/s",
        "p50",
        "p99",
        "x floor",
        "app CPU ms/req",
        "DB server CPU ms/req",
        f"c={burst}: req/s, p99",
        f"c={burst}: timeouts / errors / non-2xx",
    ]
    return table(headers, rows)


def report(results: dict[str, EngineResult], args: argparse.Namespace) -> None:
    """Print where and with what, then a table per engine, on stdout."""
    c, burst = args.connections, args.burst_connections
    versions: dict[str, str] = {}
    for result in results.values():
        versions |= result.versions
    servers = {engine: result.server for engine, result in results.items()}
    print()
    print("\n".join(machine_info(versions, servers)))
    print(
        f"load:       wrk -t{args.threads} -c{c} -d{args.duration:g}s --latency after a"
        f" {args.warmup:g} s warm-up, then -c{burst} -d{args.duration:g}s; random id in"
        f" 1..{PRODUCTS:,} per request; wrk --timeout {args.wrk_timeout:g}s"
    )
    print(
        f"note:       wrk, the app and the database share these {len(os.sched_getaffinity(0))}"
        " cores; compare each service with its own floor, not with other machines"
    )
    for engine, result in results.items():
        print()
        print(
            f"GET /products/{{id}} on {LABELS[engine]}, cache none, one worker, c={c}"
            f" (CPU per request at c={c}; the burst at c={burst})"
        )
        print(f"service:    {result.budget_line}")
        print(engine_table(result.rounds, args))


def chart(results: dict[str, EngineResult], args: argparse.Namespace) -> None:
    """The run's PNG: req/s, the ratio to each engine's floor, CPU and the c=256 tail (the first
    round of each engine)."""
    firsts = [run_ for result in results.values() for run_ in result.rounds[0]]
    floors = {run_.engine: run_ for run_ in firsts if run_.stack == "floor"}
    baselines = tuple(run_.name for run_ in floors.values())

    def of(
        value: Callable[[StackRun], float], runs: Sequence[StackRun] = firsts
    ) -> dict[str, float]:
        return {run_.name: value(run_) for run_ in runs}

    def x_floor(run_: StackRun) -> float:
        floor_rps = floors[run_.engine].steady.wrk.rps
        return run_.steady.wrk.rps / floor_rps if floor_rps else 0.0

    c, burst = args.connections, args.burst_connections
    with_server = [run_ for run_ in firsts if SERVER_CPU[run_.engine]]
    panels = [
        Panel(f"req/s at c={c}", of(lambda r: r.steady.wrk.rps), baseline=baselines),
        Panel("x its engine's floor", of(x_floor), digits=2, baseline=baselines),
        Panel(
            "app CPU per request",
            of(lambda r: r.steady.per_request_ms(r.steady.cpu.app)),
            unit="ms",
            digits=2,
            baseline=baselines,
        ),
        Panel(f"p99 at c={burst}", of(lambda r: r.burst.wrk.p99_ms), unit="ms", baseline=baselines),
        Panel(
            f"timeouts + errors at c={burst}",
            of(lambda r: r.burst.wrk.timeouts + r.burst.wrk.socket_errors + r.burst.wrk.non_2xx),
            baseline=baselines,
        ),
    ]
    if with_server:
        panels.insert(
            3,
            Panel(
                "DB server CPU per request",
                of(lambda r: r.steady.per_request_ms(r.steady.cpu.database), with_server),
                unit="ms",
                digits=2,
                baseline=baselines,
            ),
        )
    title = "GET /products/{id} by engine, cache none, one worker each, against the engine's floor"
    write_chart(args.chart, title, panels)


# ---------------------------------------------------------------------------- main


def engines_option(text: str) -> list[str]:
    """--engines mysql,sqlite: known engines, in the order given."""
    engines = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ENGINES)}; not {unknown}")
    return engines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser, duration=10.0)
    add_chart_argument(parser, "engine_read")
    parser.add_argument("--engines", type=engines_option, default=list(ENGINES))
    parser.add_argument("--burst-connections", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each stack")
    parser.add_argument(
        "--sqlite-floor-connections",
        type=int,
        default=4,
        help="read-only aiosqlite connections of the SQLite floor (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, seed, serve, load, report, per engine; clean up whatever happens."""
    args = parse_args(argv)
    require_tools("wrk")
    stop_on_sigterm()
    with scratch_directory("keel-bench-", keep=args.keep) as workdir:
        results = {engine: measure_engine(engine, args, workdir) for engine in args.engines}
    report(results, args)
    chart(results, args)


if __name__ == "__main__":
    run_main(main)
