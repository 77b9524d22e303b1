"""Benchmark: the generated service's DB read against the floor and a tutorial stack, in one run.

Renders keel (the working tree, uncommitted changes included) into a temporary directory with
database=postgresql, installs it with uv, creates and seeds a throwaway PostgreSQL database,
then serves GET /products/{id} four ways, one worker each, one after the other:

- service:  the generated project under its own gunicorn.conf.py (uvicorn worker, which for one
  worker runs asyncio's event loop, httptools), production settings, cache off, the full
  middleware stack with Prometheus;
- uvloop:   the same service with uvicorn's stock gunicorn worker, which picks uvloop: the loop
  the one worker ran before, whose one accept per turn of the loop left new connections waiting
  under load (the c=256 timeouts);
- tutorial: benchmarks/tutorial_app.py, FastAPI + SQLAlchemy as their tutorials write it (an
  AsyncSession per request from a dependency, the default pool, ORM session.get, no
  middleware), under uvicorn with uvloop and httptools: what a reader would have without keel;
- floor:    benchmarks/floor_app.py, bare Starlette and a raw asyncpg pool, under uvicorn with
  uvloop and httptools. The two apps of benchmarks/ run with the project's own virtualenv.

Each is driven by wrk with a random id per request: a warm-up, a measured run at -c64 and a burst
at -c256 that counts timeouts, socket errors and non-2xx answers. The script prints req/s, p50,
p99, the ratio to the floor, CPU per request of each process involved, PostgreSQL's commits and
rollbacks per request (round trips: pg_stat_database of the scratch database over each measured
run), and how many PostgreSQL connections each stack opened (pool churn). It writes the chart
docs/charts/db_read.png. It asserts nothing: it is a measurement to record.

Run from the repository root:  uv run python benchmarks/db_read.py   (about 3 minutes)
Needs: wrk (Debian: apt-get install wrk), uv, Python 3.11, PostgreSQL on 127.0.0.1:5432 with the
postgres user and trust authentication (bash ../shared/services.sh starts it).

Options worth knowing (--help lists them all):
    --cache memory          render with the in-memory cache on
    --profile-dir DIR       also sample each worker with py-spy and summarise where its CPU went
    --project DIR           benchmark an already generated, perhaps hand-edited, project: the
                            quickest way to try an optimisation before putting it in template/
    --env NAME=VALUE        extra environment for the service (e.g. DB_POOL_TIMEOUT_SECONDS=1)
    --chart PATH            where to write the chart ('' for none)
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
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from charts import Panel, add_chart_argument, write_chart
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
# The service's latency histogram of the read, and the bounds the tail table compares.
READ_LATENCY_BUCKET = "http_request_duration_seconds_bucket{"
READ_ROUTE = 'route="/products/{product_id}"'
TAIL_BOUNDS = ("0.25", "0.5", "1.0")
# uvicorn's own gunicorn worker: its loop "auto" picks uvloop where installed.
UVLOOP_WORKER = ("--worker-class", "uvicorn_worker.UvicornWorker")


# ---------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One measured wrk run of a stack, with the CPU it cost and the connections it opened."""

    wrk: WrkResult
    cpu: CpuSnapshot
    connections_opened: int
    commits: int
    rollbacks: int
    backends_mean: float
    backends_max: int
    # The service's own http_request_duration_seconds for the read, over the run: requests
    # answered by each bucket's bound (cumulative). Empty for a stack without metrics.
    app_latency: dict[str, float]

    def per_request_ms(self, cpu_seconds: float) -> float:
        """CPU milliseconds per answered request."""
        return self.wrk.per_request_ms(cpu_seconds)

    def per_request(self, count: int) -> float:
        """A PostgreSQL counter's increase per answered request."""
        return count / self.wrk.requests if self.wrk.requests else 0.0


@dataclass
class StackResult:
    """Everything measured for one stack."""

    server: Server
    steady: Run
    burst: Run
    connections_opened_total: int = 0
    profile: Path | None = None


def counters(python: Path, server: Server) -> dict[str, int]:
    """pg_stat_database of the server's database so far: sessions (connections opened),
    commits and rollbacks."""
    return dict(pg_admin(python, "counters", server.database))


def app_latency(server: Server) -> dict[str, float]:
    """The service's http_request_duration_seconds buckets for the read so far, summed over its
    other labels: request to response start, as the service measures it. Empty without metrics."""
    if not server.metrics_url:
        return {}
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith(READ_LATENCY_BUCKET) and READ_ROUTE in line:
            bound = re.search(r'le="([^"]+)"', line)
            if bound is not None:
                buckets[bound.group(1)] += float(line.rsplit(" ", 1)[1])
    return dict(buckets)


def measured_run(
    server: Server, python: Path, args: argparse.Namespace, *, connections: int
) -> Run:
    """One wrk run while sampling backends, connections opened, transactions, and CPU of app,
    PostgreSQL, host.

    PostgreSQL's backends flush their counters at most once a second, so a run's window starts
    and ends with up to a second of another run's transactions: ±1 s in 10, alike at both ends.
    """
    worker = server.worker_pid()
    before_counts = counters(python, server)
    before_latency = app_latency(server)
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
    after_counts = counters(python, server)
    after_latency = app_latency(server)
    return Run(
        wrk=result,
        cpu=used,
        connections_opened=after_counts["sessions"] - before_counts["sessions"],
        commits=after_counts["commits"] - before_counts["commits"],
        rollbacks=after_counts["rollbacks"] - before_counts["rollbacks"],
        backends_mean=float(backends.get("mean", 0.0)),
        backends_max=int(backends.get("max", 0)),
        app_latency={
            bound: count - before_latency.get(bound, 0.0) for bound, count in after_latency.items()
        },
    )


def benchmark(server: Server, stacks: Stacks, args: argparse.Namespace) -> StackResult:
    """Warm up, then the steady run and the burst run; optionally profile; then stop."""
    python = stacks.python
    log(f"{server.name}: ready at {server.url}; warm-up {args.warmup:g} s")
    total_before = counters(python, server)["sessions"]
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
    result.connections_opened_total = counters(python, server)["sessions"] - total_before
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


def results_table(stacks: Sequence[StackResult], burst: int) -> str:
    """The headline: req/s, p50, p99 and the ratio to the floor (the first stack) at the steady
    concurrency."""
    floor = stacks[0]
    rows = []
    for stack in stacks:
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


def tail_table(stacks: Sequence[StackResult], c: int, burst: int) -> str:
    """Where the slow requests wait: wrk's latency beside the service's own, for each run of a
    stack that measures itself. A request slow for wrk but not for the service waited before
    the service read it."""
    rows = []
    for stack in stacks:
        for label, measured in ((f"c={c}", stack.steady), (f"c={burst}", stack.burst)):
            buckets = measured.app_latency
            total = buckets.get("+Inf", 0.0)
            if not total:
                continue
            within = [f"{buckets.get(bound, 0.0) / total:.2%}" for bound in TAIL_BOUNDS]
            wrk = measured.wrk
            rows.append(
                [
                    stack.server.name,
                    label,
                    f"{wrk.p99_ms:,.0f} / {wrk.max_ms:,.0f} ms",
                    str(wrk.timeouts),
                    *within,
                    f"{total - buckets.get(TAIL_BOUNDS[-1], 0.0):,.0f}",
                ]
            )
    if not rows:
        return ""
    headers = [
        "stack",
        "run",
        "wrk p99 / max",
        "wrk timeouts",
        *(f"service: within {bound} s" for bound in TAIL_BOUNDS),
        f"service: over {TAIL_BOUNDS[-1]} s",
    ]
    return table(headers, rows)


def cpu_table(stacks: Sequence[StackResult]) -> str:
    """CPU milliseconds per request of the worker, PostgreSQL and wrk, for every measured run."""
    rows = []
    for stack in stacks:
        for measured in (stack.steady, stack.burst):
            cpu, per_request = measured.cpu, measured.per_request_ms
            rows.append(
                [
                    stack.server.name,
                    f"c={measured.wrk.connections}",
                    f"{measured.wrk.rps:,.0f}",
                    f"{measured.wrk.p99_ms:.1f} / {measured.wrk.max_ms:.0f} ms",
                    f"{per_request(cpu.app):.3f} ({per_request(cpu.app_kernel):.3f})",
                    f"{per_request(cpu.database):.3f}",
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


def round_trips_table(stacks: Sequence[StackResult], c: int, burst: int) -> str:
    """PostgreSQL's commits and rollbacks per request: 1 and 0 is one round trip per read."""
    rows = [
        [
            stack.server.name,
            *(
                f"{run.per_request(run.commits):.2f} / {run.per_request(run.rollbacks):.2f}"
                for run in (stack.steady, stack.burst)
            ),
        ]
        for stack in stacks
    ]
    headers = ["stack", f"c={c}: commits / rollbacks", f"c={burst}: commits / rollbacks"]
    return table(headers, rows)


def connections_table(stacks: Sequence[StackResult], c: int, burst: int) -> str:
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
        for stack in stacks
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


def chart(stacks: Sequence[StackResult], args: argparse.Namespace) -> None:
    """The run's PNG: req/s and its ratio to the floor, CPU, the c=256 tail and round trips."""
    c, burst = args.connections, args.burst_connections
    floor = stacks[0]

    def of(value: Callable[[StackResult], float]) -> dict[str, float]:
        return {stack.server.name: value(stack) for stack in stacks}

    base = floor.server.name
    panels = [
        Panel(f"req/s at c={c}", of(lambda s: s.steady.wrk.rps), baseline=base),
        Panel(
            "x floor (issue 14's target 0.35)",
            of(lambda s: s.steady.wrk.rps / floor.steady.wrk.rps if floor.steady.wrk.rps else 0),
            digits=2,
            baseline=base,
            target=0.35,
        ),
        Panel(
            "app CPU per request",
            of(lambda s: s.steady.per_request_ms(s.steady.cpu.app)),
            unit="ms",
            digits=2,
            baseline=base,
        ),
        Panel(f"p99 at c={burst}", of(lambda s: s.burst.wrk.p99_ms), unit="ms", baseline=base),
        Panel(
            f"PostgreSQL commits per request, c={c}",
            of(lambda s: s.steady.per_request(s.steady.commits)),
            digits=2,
            baseline=base,
        ),
        Panel(
            f"PostgreSQL rollbacks per request, c={c}",
            of(lambda s: s.steady.per_request(s.steady.rollbacks)),
            digits=2,
            baseline=base,
        ),
    ]
    title = f"GET /products/{{id}}, cache {args.cache}, one worker each"
    write_chart(args.chart, title, panels)


def report(stacks: Sequence[StackResult], args: argparse.Namespace, header: list[str]) -> None:
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
    print(results_table(stacks, burst))
    print()
    print("CPU per request (ms) of the worker (its kernel share in brackets), PostgreSQL and wrk")
    print(cpu_table(stacks))
    print()
    print(
        "PostgreSQL transactions per request (pg_stat_database of the scratch database over each"
        " run; an autocommit statement counts as a commit): 1 / 0 is one round trip per read"
    )
    print(round_trips_table(stacks, c, burst))
    print()
    print("PostgreSQL connections: backends open (sampled every 0.2 s) and connections opened")
    print(connections_table(stacks, c, burst))
    if tails := tail_table(stacks, c, burst):
        print()
        print(
            "Latency as wrk sees it (write to response) and as the service measures it (its"
            " http_request_duration_seconds: request to response start)"
        )
        print(tails)
    for stack in stacks:
        if stack.profile is not None:
            print()
            print("\n".join(profile_summary(stack.profile)))


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser, duration=10.0)
    add_chart_argument(parser, "db_read")
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
) -> tuple[list[StackResult], Budget]:
    """Seed a fresh database, then benchmark the service (on asyncio's loop, then on uvloop), the
    tutorial and the floor one after the other; returns them floor first."""
    with (
        seeded_database(project, workdir, PRODUCTS, args.env) as database,
        Processes() as processes,
    ):
        stacks = Stacks(processes, workdir, project.python, database)
        service = benchmark(stacks.service(project.path, "service"), stacks, args)
        uvloop = benchmark(
            stacks.service(project.path, "uvloop", options=UVLOOP_WORKER), stacks, args
        )
        tutorial = benchmark(stacks.tutorial("tutorial"), stacks, args)
        floor = benchmark(stacks.floor("floor", args.floor_pool_size), stacks, args)
    return [floor, tutorial, service, uvloop], database.budget


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
        stacks, budget = serve_and_measure(args, project, workdir)
        header = [*machine_info(versions, servers), f"service:    {budget.line}"]
        if args.project is not None:
            header.append(f"project:    {project.path} (given, not rendered)")
        if args.env:
            header.append(f"service env: {' '.join(args.env)}")
        report(stacks, args, header)
        chart(stacks, args)


if __name__ == "__main__":
    run_main(main)
