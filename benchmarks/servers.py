"""Benchmark: the generated service under three servers, same worker count, in one run.

Renders keel (the working tree, uncommitted changes included) with database=postgresql,
cache=none and metrics=prometheus, installs it with uv, seeds a throwaway PostgreSQL database,
and installs granian (PyPI) into that project's virtualenv at run time with `uv pip install`:
the generated project's dependencies are not changed. Then it serves the same app, the
project's create_app() factory in production settings, with --workers workers (default 2) under:

- gunicorn: the project's own gunicorn.conf.py, uvicorn-worker, uvloop and httptools (what the
  generated Dockerfile runs; gunicorn's master also serves the workers' metrics);
- uvicorn:  uvicorn's own process manager, `uvicorn --factory --workers N` with uvloop and
  httptools, no server header and no access log, as the gunicorn worker is configured;
- granian:  `granian --interface asgi --factory --workers N` with uvloop, HTTP/1.

The metrics directory is emptied before each start, as gunicorn.conf.py's on_starting does. Every
server is measured in turn, in an order that rotates each round, one at a time so that only one
holds PostgreSQL connections: started, a warm-up of each route, then wrk at -c64 on GET /health
and on GET /products/{id} (a random id of 10,000), then stopped. The script prints, per server
and route, req/s, p99 and the CPU per request of the whole server (its master and its workers),
each round and the medians with their ratio to gunicorn, and writes the chart
docs/charts/servers.png. It asserts nothing, and decides nothing: it is a measurement to
record. What else a server must keep true (exact metrics under several workers, graceful
shutdown, the budget refused at startup, recycling a worker on a memory or request limit) is not
measured here.

Run from the repository root:  uv run python benchmarks/servers.py   (about 3 minutes)
Needs: wrk (Debian: apt-get install wrk), uv, Python 3.11, PostgreSQL on 127.0.0.1:5432 with the
postgres user and trust authentication, and PyPI reachable for granian.

Options worth knowing (--help lists them all):
    --workers N             worker processes of every server (default 2)
    --rounds N              rounds of all three (default 2)
    --project DIR           an already generated project instead of rendering one
    --chart PATH            where to write the chart ('' for none)
    --keep                  keep the rendered project and the servers' logs
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from charts import Panel, add_chart_argument, write_chart
from harness import (
    HOST,
    PACKAGE,
    Processes,
    Project,
    Server,
    WrkResult,
    add_load_arguments,
    add_project_arguments,
    children_of,
    cpu_seconds,
    drive,
    free_port,
    interleaved_rounds,
    log,
    machine_info,
    package_versions,
    prepare,
    project_env,
    ratio,
    require_tools,
    run,
    run_main,
    scratch_directory,
    start_server,
    stop_on_sigterm,
    table,
)
from pg_stacks import VERSIONS_OF, Seeded, postgres_line, seeded_database, start_service

PRODUCTS = 10_000
SERVERS = ("gunicorn", "uvicorn", "granian")
# name -> the path wrk asks for (product_by_id.lua appends a number: a random id, or a query
# string that /health ignores).
ROUTES = {"/health": "/health?n=", "DB read": "/products/"}
GRANIAN = "granian"


@dataclass
class Measured:
    """One wrk run of one route, with the CPU the whole server used meanwhile."""

    wrk: WrkResult
    server_cpu_seconds: float

    @property
    def cpu_per_request_ms(self) -> float:
        """CPU milliseconds of the server's processes per answered request."""
        return self.wrk.per_request_ms(self.server_cpu_seconds)

    @property
    def errors(self) -> int:
        """Non-2xx answers, socket errors and timeouts."""
        return self.wrk.non_2xx + self.wrk.socket_errors + self.wrk.timeouts


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants alive now (a server's master and workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            pending.extend(children_of(current))
        except OSError:  # it ended meanwhile
            continue
    return total


def install_granian(python: Path) -> None:
    """granian into the project's virtualenv, leaving its pyproject.toml and lock alone."""
    log("uv pip install granian into the project's virtualenv")
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    run([uv, "pip", "install", "--quiet", "--python", python, GRANIAN], env=project_env())


def server_command(name: str, python: Path, port: int, workers: int) -> list[str | Path]:
    """The command line of uvicorn's or granian's process manager serving the project's app."""
    app = f"{PACKAGE}.main:create_app"
    if name == "uvicorn":
        return [
            python, "-m", "uvicorn", app, "--factory", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-server-header", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return [
        python, "-m", "granian", app, "--factory", "--interface", "asgi", "--host", HOST,
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "1",
        "--log-level", "warning",
    ]  # fmt: skip


class Servers:
    """Starts any of the three servers on the seeded database, one at a time."""

    def __init__(
        self, processes: Processes, project: Project, database: Seeded, workdir: Path
    ) -> None:
        self.processes, self.project, self.workdir = processes, project, workdir
        self.env, self.budget = database.env, database.budget
        self._count = 0

    def start(self, name: str) -> Server:
        """The server `name` on free ports with an empty metrics directory; returns it ready."""
        self._count += 1
        port = free_port()
        metrics = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        env = {**self.env, "PORT": str(port), "METRICS_PORT": str(free_port())}
        log_path = self.workdir / f"{name}-{self._count}.log"
        if name == "gunicorn":
            return start_service(
                self.processes, self.project.path, env, log_path, self.budget, name=name
            )
        command = server_command(name, self.project.python, port, int(env["WEB_CONCURRENCY"]))
        return start_server(
            self.processes,
            name,
            command,
            port=port,
            log_path=log_path,
            env=env,
            cwd=self.project.path,
        )

    def stop(self, server: Server) -> None:
        """Stop the server, its workers too."""
        self.processes.stop(server.process)


def measure_server(servers: Servers, name: str, args: argparse.Namespace) -> dict[str, Measured]:
    """Start one server, warm both routes up, measure each, stop it."""
    server = servers.start(name)
    try:
        for path in ROUTES.values():
            drive(server, args, args.warmup, script_env={"BENCH_PATH": path})
        measured = {}
        for route, path in ROUTES.items():
            before = tree_cpu_seconds(server.process.pid)
            result = drive(server, args, args.duration, script_env={"BENCH_PATH": path})
            measured[route] = Measured(result, tree_cpu_seconds(server.process.pid) - before)
        return measured
    finally:
        servers.stop(server)


# ---------------------------------------------------------------------------- report


def medians(
    rounds: dict[str, list[dict[str, Measured]]], value: Callable[[Measured], float]
) -> dict[str, dict[str, float]]:
    """route -> server -> the median over the rounds of `value`."""
    return {
        route: {name: statistics.median(value(r[route]) for r in rounds[name]) for name in SERVERS}
        for route in ROUTES
    }


def report(
    rounds: dict[str, list[dict[str, Measured]]], args: argparse.Namespace, header: list[str]
) -> None:
    """Every round, then the medians with their ratio to gunicorn."""
    print()
    print("\n".join(header))
    print(
        f"load:       wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s per route,"
        f" after a {args.warmup:g} s warm-up of each; {args.workers} workers per server;"
        " servers take turns, one running at a time"
    )
    print()
    rows = [
        [
            name,
            route,
            str(number + 1),
            f"{m.wrk.rps:,.0f}",
            f"{m.wrk.p50_ms:.1f} ms",
            f"{m.wrk.p99_ms:.1f} ms",
            f"{m.cpu_per_request_ms:.3f} ms",
            str(m.errors),
        ]
        for number in range(args.rounds)
        for name in SERVERS
        for route in ROUTES
        for m in [rounds[name][number][route]]
    ]
    headers = ["server", "route", "round", "req/s", "p50", "p99", "CPU / request", "errors"]
    print(table(headers, rows))
    rps = medians(rounds, lambda m: m.wrk.rps)
    p99 = medians(rounds, lambda m: m.wrk.p99_ms)
    cpu = medians(rounds, lambda m: m.cpu_per_request_ms)
    print()
    print("medians over the rounds; CPU of the server's master and workers per request")
    summary = [
        [
            name,
            route,
            f"{rps[route][name]:,.0f}",
            ratio(rps[route][name], rps[route]["gunicorn"]),
            f"{p99[route][name]:.1f} ms",
            f"{cpu[route][name]:.3f} ms",
            ratio(cpu[route][name], cpu[route]["gunicorn"]),
        ]
        for route in ROUTES
        for name in SERVERS
    ]
    headers = ["server", "route", "req/s", "x gunicorn", "p99", "CPU / request", "x gunicorn"]
    print(table(headers, summary))


def chart(rounds: dict[str, list[dict[str, Measured]]], args: argparse.Namespace) -> None:
    """The run's PNG: medians of req/s, p99 and CPU per request, per route."""
    rps = medians(rounds, lambda m: m.wrk.rps)
    p99 = medians(rounds, lambda m: m.wrk.p99_ms)
    cpu = medians(rounds, lambda m: m.cpu_per_request_ms)
    panels = []
    for route in ROUTES:
        panels += [
            Panel(f"{route}: req/s", rps[route], baseline="gunicorn"),
            Panel(f"{route}: p99", p99[route], unit="ms", digits=1, baseline="gunicorn"),
            Panel(
                f"{route}: CPU per request",
                cpu[route],
                unit="ms",
                digits=3,
                baseline="gunicorn",
            ),
        ]
    title = (
        f"the generated service under three servers, {args.workers} workers each,"
        f" c={args.connections}, medians of {args.rounds} rounds"
    )
    write_chart(args.chart, title, panels)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser, duration=7.0)
    add_chart_argument(parser, "servers")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--project", type=Path, help="benchmark this already generated project instead"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install (granian too), seed, serve each server in turn, report."""
    args = parse_args(argv)
    require_tools("wrk")
    stop_on_sigterm()
    with scratch_directory("keel-bench-servers-", keep=args.keep) as workdir:
        project = prepare(workdir, vcs_ref=args.vcs_ref, given=args.project)
        install_granian(project.python)
        versions = package_versions(project.python, [*VERSIONS_OF, "uvloop", GRANIAN])
        services = postgres_line(project.python)
        settings = [f"WEB_CONCURRENCY={args.workers}"]
        with (
            seeded_database(project, workdir, PRODUCTS, settings) as database,
            Processes() as processes,
        ):
            servers = Servers(processes, project, database, workdir)
            rounds = interleaved_rounds(
                SERVERS, args.rounds, lambda name: measure_server(servers, name, args)
            )
            header = [*machine_info(versions, services), f"service:    {database.budget.line}"]
        report(rounds, args, header)
        chart(rounds, args)


if __name__ == "__main__":
    run_main(main)
