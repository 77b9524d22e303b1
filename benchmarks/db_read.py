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
    --env NAME=VALUE        extra environment for the service (e.g. DB_POOL_TIMEOUT_SECONDS=1)
    --keep                  keep the rendered project and the servers' logs
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    PACKAGE,
    CpuSnapshot,
    Processes,
    Project,
    Server,
    WrkResult,
    add_load_arguments,
    add_project_arguments,
    drive,
    log,
    machine_info,
    package_versions,
    prepare,
    project_env,
    ratio,
    require_tools,
    run_main,
    scratch_directory,
    stop_on_sigterm,
    table,
)
from pg_stacks import (
    FALLBACK_POOL_SIZE,
    PG_ADMIN,
    STATS_SETTLE_SECONDS,
    VERSIONS_OF,
    Budget,
    Stacks,
    pg_admin,
    postgres_line,
    seeded_database,
)

PRODUCTS = 10_000


# ---------------------------------------------------------------------------- measuring


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
        return self.wrk.per_request_ms(cpu_seconds)


@dataclass
class StackResult:
    """Everything measured for one stack."""

    server: Server
    steady: Run
    burst: Run
    connections_opened_total: int = 0
    profile: Path | None = None


def sessions(python: Path, server: Server) -> int:
    """Connections opened so far to the server's database (pg_stat_database.sessions)."""
    return int(pg_admin(python, "sessions", server.database)["sessions"])


def measured_run(
    server: Server, python: Path, args: argparse.Namespace, *, connections: int
) -> Run:
    """One wrk run while sampling backends, connections opened, and CPU of app, PostgreSQL, host."""
    worker = server.worker_pid()
    sessions_before = sessions(python, server)
    watcher = subprocess.Popen(
        [str(python), str(PG_ADMIN), "watch", server.database, f"{args.duration:g}"],
        stdout=subprocess.PIPE,
        env=project_env(),
    )
    try:
        before = CpuSnapshot.take(worker)
        result = drive(server, args, args.duration, connections=connections)
        used = CpuSnapshot.take(worker) - before
        watched, _ = watcher.communicate(timeout=args.duration + 30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    time.sleep(STATS_SETTLE_SECONDS)
    backends = json.loads(watched or b"{}").get(server.application_name, {})
    return Run(
        wrk=result,
        cpu=used,
        connections_opened=sessions(python, server) - sessions_before,
        backends_mean=float(backends.get("mean", 0.0)),
        backends_max=int(backends.get("max", 0)),
    )


def benchmark(server: Server, stacks: Stacks, args: argparse.Namespace) -> StackResult:
    """Warm up, then the steady run and the burst run; optionally profile; then stop."""
    python = stacks.python
    log(f"{server.name}: ready at {server.url}; warm-up {args.warmup:g} s")
    total_before = sessions(python, server)
    drive(server, args, args.warmup)
    time.sleep(STATS_SETTLE_SECONDS)
    log(f"{server.name}: -c{args.connections} for {args.duration:g} s")
    steady = measured_run(server, python, args, connections=args.connections)
    log(f"{server.name}: -c{args.burst_connections} for {args.duration:g} s")
    burst = measured_run(server, python, args, connections=args.burst_connections)
    result = StackResult(server=server, steady=steady, burst=burst)
    if args.profile_dir is not None:
        log(f"{server.name}: py-spy for {args.profile_seconds:g} s at -c{args.connections}")
        result.profile = profile_worker(server, args, args.profile_dir, stacks.processes)
    stacks.stop(server)
    time.sleep(STATS_SETTLE_SECONDS)
    result.connections_opened_total = sessions(python, server) - total_before
    return result


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
    recorder = processes.start(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    drive(server, args, args.profile_seconds)
    _, errors = recorder.communicate(timeout=60)
    processes.stop(recorder)
    if not output.exists():
        raise SystemExit(f"py-spy wrote no profile: {errors.decode(errors='replace')[-2000:]}")
    return output


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


# ---------------------------------------------------------------------------- report


def results_table(service: StackResult, floor: StackResult, burst: int) -> str:
    """The headline: req/s, p50, p99 and the ratio to the floor at the steady concurrency."""
    rows = []
    for stack in (floor, service):
        steady, peak = stack.steady.wrk, stack.burst.wrk
        rows.append(
            [
                stack.server.name,
                f"{steady.rps:,.0f}",
                f"{steady.p50_ms:.1f} ms",
                f"{steady.p99_ms:.1f} ms",
                ratio(steady.rps, floor.steady.wrk.rps),
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser)
    parser.add_argument("--cache", choices=["none", "memory"], default="none")
    parser.add_argument("--burst-connections", type=int, default=256)
    parser.add_argument(
        "--profile-dir", type=Path, help="also sample each worker with py-spy into this directory"
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
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
        help="extra environment for the service, e.g. DB_POOL_TIMEOUT_SECONDS=1; repeatable",
    )
    return parser.parse_args(argv)


def serve_and_measure(
    args: argparse.Namespace, project: Project, workdir: Path
) -> tuple[StackResult, StackResult, Budget]:
    """Seed a fresh database, then benchmark the service and the floor one after the other."""
    with (
        seeded_database(project, workdir, PRODUCTS, args.env) as database,
        Processes() as processes,
    ):
        stacks = Stacks(processes, workdir, project.python, database)
        service = benchmark(stacks.service(project.path, "service"), stacks, args)
        floor = benchmark(stacks.floor("floor", args.floor_pool_size), stacks, args)
    return service, floor, database.budget


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, seed, serve, load, report; clean up whatever happens."""
    args = parse_args(argv)
    require_tools("wrk")
    if args.profile_dir is not None:
        if shutil.which(args.py_spy) is None:
            raise SystemExit("--profile-dir needs py-spy: uv tool install py-spy, or --py-spy PATH")
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        args.profile_dir = args.profile_dir.resolve()
    stop_on_sigterm()

    with scratch_directory("keel-bench-", keep=args.keep) as workdir:
        project = prepare(workdir, vcs_ref=args.vcs_ref, given=args.project, cache=args.cache)
        versions = package_versions(project.python, VERSIONS_OF)
        servers = postgres_line(project.python)
        service, floor, budget = serve_and_measure(args, project, workdir)
        header = [*machine_info(versions, servers), f"service:    {budget.line}"]
        if args.project is not None:
            header.append(f"project:    {project.path} (given, not rendered)")
        if args.env:
            header.append(f"service env: {' '.join(args.env)}")
        report(service, floor, args, header)


if __name__ == "__main__":
    run_main(main)
