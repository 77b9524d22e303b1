"""Benchmark: the generated service's cached read, hit and miss, against the floor, in one run.

Renders keel (the working tree, uncommitted changes included) twice with database=postgresql,
metrics=prometheus and one web worker: once with cache=redis and once with cache=none. It installs
both with uv, seeds a throwaway PostgreSQL database with 300,000 products, and starts a
redis-server of its own on a free port (--save '' --appendonly no): nothing shared is touched,
its CPU can be measured, and the outage runs can kill it. Keys go under a namespace of the run's
own all the same, and the server is gone at the end.

Every stack serves GET /products/{id}, one worker, production settings, driven by wrk at -c64
after a warm-up:

- floor:          benchmarks/floor_app.py, bare Starlette + a raw asyncpg pool (as db_read.py);
- floor, cached:  the same app as the plainest cache-aside: a raw Redis GET (hiredis) of the
                  product's JSON, over the hot set, so every request is one GET;
- service, none:  the generated project with cache=none: every request reads the database;
- service, hit:   cache=redis, a random id from a hot set of 100 products that the warm-up cached;
- service, miss:  cache=redis, where no id is asked for twice. Each wrk thread walks its own ids
                  upward through products nobody has asked for in this run, the warm-up through
                  one block and the measured run through the next. Every request then pays the
                  Redis GET, the claim script, the database read and the store script. (A tiny
                  TTL would also mean misses, but requests for one id would then meet in the
                  single-flight and share loads; flushing the namespace would race the run.)

The service's own cache_requests_total, scraped before and after each run, shows how many look-ups
hit, missed or failed, so each run can be checked to be what its label says. The floor and
cache=none runs walk ids the same way, so every database read is alike.

Then the outage runs, the cache=redis service over the hot set at -c64:

- refused:  REDIS_URL names a closed port, so every connect is refused at once;
- killed:   a Redis of the service's own is SIGKILLed a third of the way into the wrk run, and
            started again (empty) at two thirds. The counters are scraped at each step, and then
            every 0.1 s until the first hit, to show when hits resume;
- silent:   REDIS_URL names a listener that accepts connections and never answers: a look-up
            waits REDIS_TIMEOUT_SECONDS (0.25 s), then the service leaves Redis alone for 1 s.

And the stampede: N concurrent requests for one product nobody has asked for, repeated for a few
products. All N connections are opened first, then every request is written at once. It runs
against cache=none, cache=redis with one worker, and cache=redis with two workers, where the
lock in Redis has to hold across processes and not only the single-flight inside one. Database
loads are counted twice, independently: the products table's idx_scan in pg_stat_user_tables,
read after the service has stopped (every backend flushes its statistics as it exits, and nothing
else reads that table meanwhile), and the service's own query log (DB_SLOW_QUERY_SECONDS=0 logs
every statement).

It asserts nothing: it is a measurement to record. The figures in docs/benchmarks.md come from a
shared 2-core VM where wrk, the apps, Redis and PostgreSQL share the cores with other work:
compare the rows of one run with each other, not with other machines.

It writes the chart docs/charts/cache_read.png.

Run from the repository root:  uv run python benchmarks/cache_read.py   (about 3 minutes)
Needs: wrk and redis-server (Debian: apt-get install wrk redis-server), uv, Python 3.11, and
PostgreSQL on 127.0.0.1:5432 with the postgres user and trust authentication.

Options worth knowing (--help lists them all):
    --duration SECONDS      of each measured run (default 10; try 3 while developing)
    --rounds N              measure the reads N times in turns and report each one's median
    --parts reads,outage    run only some parts (reads, outage, stampede)
    --keep                  keep the rendered projects and the servers' logs
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from charts import Panel, add_chart_argument, write_chart
from harness import (
    HOST,
    CpuSnapshot,
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
    log,
    machine_info,
    package_versions,
    prepare,
    ratio,
    require_tools,
    run,
    run_main,
    scratch_directory,
    stop_on_sigterm,
    table,
)
from pg_stacks import (
    STATS_SETTLE_SECONDS,
    VERSIONS_OF,
    Stacks,
    pg_admin,
    postgres_line,
    seeded_database,
)

PRODUCTS = 300_000
HOT_IDS = 100
NAMESPACE = f"keel-bench-{os.getpid()}"
STAMPEDE_MARKER = "WHERE products.id ="  # in the logged statement of the service's product read
REDIS_READY_SECONDS = 10.0
CACHE_COUNTER = re.compile(r'^cache_requests_total\{result="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


# ---------------------------------------------------------------------------- ids


@dataclass(frozen=True)
class Ids:
    """The ids one wrk run asks for (the settings of product_by_id.lua)."""

    first: int
    last: int
    is_sequential: bool

    def script_env(self, threads: int) -> dict[str, str]:
        """The BENCH_* variables of the wrk script."""
        return {
            "BENCH_FIRST_ID": str(self.first),
            "BENCH_MAX_ID": str(self.last),
            "BENCH_ORDER": "sequential" if self.is_sequential else "random",
            "BENCH_THREADS": str(threads),
        }

    def describe(self) -> str:
        """Short form for the tables."""
        if self.is_sequential:
            return f"each once, from {self.first:,}"
        return f"random in {self.first:,}..{self.last:,}"


HOT = Ids(1, HOT_IDS, is_sequential=False)
# The floor and cache=none runs cache nothing, so they may walk the same ids again.
WALK = Ids(HOT_IDS + 1, PRODUCTS, is_sequential=True)


class FreshIds:
    """Ids nobody has asked the cached stacks for yet in this run, handed out in order."""

    def __init__(self, first: int, last: int) -> None:
        self._next = first
        self._last = last

    def block(self) -> Ids:
        """Every id from the next unused one on; report what a run used with `used`."""
        if self._next > self._last:
            raise SystemExit(f"no fresh ids left below {self._last:,}: seed more products")
        return Ids(self._next, self._last, is_sequential=True)

    def used(self, result: WrkResult) -> None:
        """Skip past the ids a wrk run asked for."""
        self._next = max(self._next, result.last_id + 1)

    def take(self, count: int) -> list[int]:
        """`count` single fresh ids."""
        ids = list(range(self._next, self._next + count))
        self._next += count
        return ids


# ---------------------------------------------------------------------------- Redis


class RedisServer:
    """A redis-server of the benchmark's own, on a free port, that it may kill and restart."""

    def __init__(self, processes: Processes, directory: Path, name: str) -> None:
        self._processes = processes
        self._directory = directory
        self._name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """REDIS_URL for the service."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start it (again, empty: nothing is saved) and wait until it answers PING."""
        command = [
            "redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--dir", str(self._directory),
        ]  # fmt: skip
        with (self._directory / f"{self._name}.log").open("ab") as output:
            self.process = self._processes.start(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_READY_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port)) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise SystemExit(f"redis-server on port {self.port} did not answer PING")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no goodbye to the clients."""
        assert self.process is not None
        self.process.kill()
        self._processes.stop(self.process)

    def stop(self) -> None:
        """SIGTERM, for good."""
        if self.process is not None:
            self._processes.stop(self.process)

    def cpu(self) -> float:
        """CPU seconds it has used since it last started."""
        return cpu_seconds(self.process.pid) if self.process is not None else 0.0


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers on them, like a hung Redis."""
    listener = socket.create_server((HOST, 0), backlog=1024)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, name="silent-redis", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        thread.join()
        for connection in [*held, listener]:
            connection.close()


def redis_version() -> str:
    """redis-server's version, from its --version line."""
    line = run(["redis-server", "--version"])
    match = re.search(r"v=(\S+)", line)
    return match.group(1) if match else line.strip()


# ---------------------------------------------------------------------------- measuring


def http_get(url: str, timeout: float = 10.0) -> str:
    """The body of a GET, as text."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def cache_counts(server: Server) -> collections.Counter[str]:
    """The service's cache_requests_total by result; empty for the floor, which has no metrics."""
    if not server.is_gunicorn:
        return collections.Counter()
    text = http_get(server.metrics_url)
    return collections.Counter({m[1]: int(float(m[2])) for m in CACHE_COUNTER.finditer(text)})


def readiness(server: Server) -> str:
    """The status /ready reports: ready, degraded or unavailable."""
    match = re.search(r'"status":"(\w+)"', http_get(server.url + "/ready"))
    return match.group(1) if match else "?"


def describe_counts(counts: collections.Counter[str]) -> str:
    """hit / miss / error counts, or a dash for a stack without them."""
    if not counts:
        return "-"
    return " / ".join(f"{counts[result]:,}" for result in ("hit", "miss", "error"))


@dataclass
class Measured:
    """One measured wrk run of a stack, with the CPU it cost and the cache's counts."""

    label: str
    ids: Ids
    wrk: WrkResult
    cpu: CpuSnapshot
    redis_cpu: float
    cache: collections.Counter[str]
    notes: list[str] = field(default_factory=list)

    def per_request_ms(self, seconds: float) -> str:
        """CPU milliseconds per answered request."""
        return f"{seconds * 1000 / self.wrk.requests:.3f}" if self.wrk.requests else "-"

    def errors(self) -> str:
        """wrk's failures, or "none"."""
        w = self.wrk
        failures = [
            f"{count} {name}"
            for count, name in ((w.non_2xx, "non-2xx"), (w.socket_errors, "socket errors"))
            if count
        ]
        if w.timeouts:
            failures.append(f"{w.timeouts} timeouts")
        return ", ".join(failures) or "none"


def wrk(server: Server, args: argparse.Namespace, ids: Ids, seconds: float) -> WrkResult:
    """One wrk run at the command line's concurrency over these ids."""
    return drive(server, args, seconds, script_env=ids.script_env(args.threads))


def measure(
    server: Server,
    args: argparse.Namespace,
    label: str,
    ids: Ids | FreshIds,
    redis: RedisServer | None = None,
) -> Measured:
    """A warm-up, then a measured run; a FreshIds gives each of the two a block of its own."""
    warmup_ids = ids.block() if isinstance(ids, FreshIds) else ids
    log(f"{label}: warm-up {args.warmup:g} s, ids {warmup_ids.describe()}")
    warmed = wrk(server, args, warmup_ids, args.warmup)
    if isinstance(ids, FreshIds):
        ids.used(warmed)
    run_ids = ids.block() if isinstance(ids, FreshIds) else ids
    log(f"{label}: -c{args.connections} for {args.duration:g} s, ids {run_ids.describe()}")
    counts_before = cache_counts(server)
    cpu_before = CpuSnapshot.take(server.worker_pid())
    redis_before = redis.cpu() if redis else 0.0
    result = wrk(server, args, run_ids, args.duration)
    cpu = CpuSnapshot.take(server.worker_pid()) - cpu_before
    redis_cpu = redis.cpu() - redis_before if redis else 0.0
    counts = cache_counts(server)
    counts.subtract(counts_before)
    if isinstance(ids, FreshIds):
        ids.used(result)
    return Measured(label, run_ids, result, cpu, redis_cpu, counts)


# ---------------------------------------------------------------------------- the parts


@dataclass
class Projects:
    """The two rendered and installed projects."""

    redis: Path
    none: Path


def read_runs(
    stacks: Stacks,
    projects: Projects,
    redis: RedisServer,
    fresh: FreshIds,
    args: argparse.Namespace,
) -> list[Measured]:
    """Floor, cached floor, cache=none, hit and miss, taking turns for --rounds rounds: each
    one's median run by req/s, with every round's req/s in its notes."""
    runs: dict[str, list[Measured]] = collections.defaultdict(list)
    for number in range(1, args.rounds + 1):
        log(f"reads: round {number}/{args.rounds}")
        for measured in read_round(stacks, projects, redis, fresh, args):
            runs[measured.label].append(measured)
    medians = []
    for each in runs.values():
        median = sorted(each, key=lambda m: m.wrk.rps)[len(each) // 2]
        median.notes.append("req/s by round: " + ", ".join(f"{m.wrk.rps:,.0f}" for m in each))
        medians.append(median)
    return medians


def read_round(
    stacks: Stacks,
    projects: Projects,
    redis: RedisServer,
    fresh: FreshIds,
    args: argparse.Namespace,
) -> list[Measured]:
    """Floor, cached floor, cache=none, hit and miss: one measured run each."""
    results = []
    floor = stacks.floor("floor")
    results.append(measure(floor, args, "floor: Starlette + asyncpg", WALK))
    stacks.stop(floor)

    floor = stacks.floor(
        "floor, cached",
        FLOOR_REDIS_URL=redis.url,
        FLOOR_CACHE_PREFIX=f"{NAMESPACE}:floor:product:",
    )
    results.append(measure(floor, args, "floor, cached: Starlette + Redis GET", HOT, redis))
    stacks.stop(floor)

    service = stacks.service(projects.none, "service, cache=none")
    results.append(measure(service, args, "service, cache=none", WALK))
    stacks.stop(service)

    service = stacks.service(projects.redis, "service, cache=redis", REDIS_URL=redis.url)
    results.append(measure(service, args, "service, cache hit", HOT, redis))
    results.append(measure(service, args, "service, cache miss", fresh, redis))
    stacks.stop(service)
    return results


def outage_runs(stacks: Stacks, projects: Projects, args: argparse.Namespace) -> list[Measured]:
    """The cache=redis service over the hot set with Redis refused, killed, and silent."""
    results = []
    refused_url = f"redis://{HOST}:{free_port()}/0"
    service = stacks.service(projects.redis, "Redis refused", REDIS_URL=refused_url)
    state = readiness(service)
    results.append(measure(service, args, "Redis refused (closed port)", HOT))
    results[-1].notes.append(f"/ready: {state}")
    stacks.stop(service)

    results.append(killed_run(stacks, projects, args))

    with silent_listener() as port:
        service = stacks.service(
            projects.redis, "Redis silent", REDIS_URL=f"redis://{HOST}:{port}/0"
        )
        state = readiness(service)
        results.append(measure(service, args, "Redis silent (never answers)", HOT))
        results[-1].notes.append(f"/ready: {state}")
        stacks.stop(service)
    return results


def killed_run(stacks: Stacks, projects: Projects, args: argparse.Namespace) -> Measured:
    """One wrk run during which the service's Redis is killed, then started again, empty."""
    redis = RedisServer(stacks.processes, stacks.workdir, "redis-killed")
    redis.start()
    service = stacks.service(projects.redis, "Redis killed", REDIS_URL=redis.url)
    label = "Redis killed, then restarted"
    log(f"{label}: warm-up {args.warmup:g} s over the hot set")
    wrk(service, args, HOT, args.warmup)
    third = args.duration / 3
    log(f"{label}: -c{args.connections} for {args.duration:g} s, kill at {third:.1f} s")
    steps = [cache_counts(service)]
    states = [readiness(service)]
    cpu_before = CpuSnapshot.take(service.worker_pid())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        load = pool.submit(wrk, service, args, HOT, args.duration)
        time.sleep(third)
        steps.append(cache_counts(service))
        redis.kill()
        time.sleep(max(0.0, started + 2 * third - time.monotonic()))
        steps.append(cache_counts(service))
        states.append(readiness(service))
        redis.start()
        restarted = time.monotonic()
        first_hit = None
        while not load.done():
            if cache_counts(service)["hit"] > steps[-1]["hit"]:
                first_hit = time.monotonic() - restarted
                break
            time.sleep(0.1)
        result = load.result()
    cpu = CpuSnapshot.take(service.worker_pid()) - cpu_before
    steps.append(cache_counts(service))
    states.append(readiness(service))
    stacks.stop(service)
    redis.stop()

    total = steps[-1].copy()
    total.subtract(steps[0])
    measured = Measured(label, HOT, result, cpu, 0.0, total)
    for name, before, after in zip(("up", "killed", "restarted"), steps, steps[1:], strict=False):
        delta = after.copy()
        delta.subtract(before)
        measured.notes.append(f"{name}: hit / miss / error {describe_counts(delta)}")
    measured.notes.append(f"/ready before, while killed, after: {', '.join(states)}")
    measured.notes.append(
        "no hit after the restart before wrk ended"
        if first_hit is None
        else f"first hit {first_hit:.2f} s after the restart"
    )
    return measured


@dataclass
class Stampede:
    """What N concurrent requests for one cold product cost, over a few products."""

    label: str
    workers: int
    requests: int
    rounds: int
    statuses: collections.Counter[int]
    slowest_seconds: float
    loads_by_scans: int
    loads_by_log: int
    cache: collections.Counter[str]
    worker_cpu: list[float]


async def one_stampede(host: str, port: int, path: str, requests: int) -> tuple[list[int], float]:
    """Open `requests` connections, then send one GET on each at once; statuses and time taken."""
    connections = await asyncio.gather(
        *(asyncio.open_connection(host, port) for _ in range(requests))
    )
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return int(answer.split(b" ", 2)[1]) if answer else 0

    started = time.monotonic()
    async with asyncio.timeout(60):
        statuses = await asyncio.gather(*(send(r, w) for r, w in connections))
    return list(statuses), time.monotonic() - started


def stampede_run(
    stacks: Stacks,
    project: Path,
    label: str,
    fresh: FreshIds,
    args: argparse.Namespace,
    *,
    workers: int,
    **settings: str,
) -> Stampede:
    """Stampedes on fresh products; loads counted by idx_scan and by the service's query log."""
    service = stacks.service(
        project, label, WEB_CONCURRENCY=str(workers), DB_SLOW_QUERY_SECONDS="0", **settings
    )
    time.sleep(0.5)  # every worker past its lifespan, not only the one that answered /ready
    worker_pids = children_of(service.process.pid)
    cpu_before = [cpu_seconds(pid) for pid in worker_pids]
    counts_before = cache_counts(service)
    scans_before = pg_admin(stacks.python, "scans", stacks.database.dsn, "products")["idx_scan"]
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    statuses: collections.Counter[int] = collections.Counter()
    slowest = 0.0
    log(f"{label}: {args.stampede_rounds} x {args.stampede_requests} requests for a cold key")
    for product_id in fresh.take(args.stampede_rounds):
        answers, seconds = asyncio.run(
            one_stampede(host, int(port), f"/products/{product_id}", args.stampede_requests)
        )
        statuses.update(answers)
        slowest = max(slowest, seconds)
    worker_cpu = [
        cpu_seconds(pid) - before for pid, before in zip(worker_pids, cpu_before, strict=True)
    ]
    counts = cache_counts(service)
    counts.subtract(counts_before)
    stacks.stop(service)
    time.sleep(STATS_SETTLE_SECONDS)
    scans_after = pg_admin(stacks.python, "scans", stacks.database.dsn, "products")["idx_scan"]
    logged = sum(
        "slow query" in line and STAMPEDE_MARKER in line
        for line in service.log.read_text(errors="replace").splitlines()
    )
    return Stampede(
        label=label,
        workers=workers,
        requests=args.stampede_requests,
        rounds=args.stampede_rounds,
        statuses=statuses,
        slowest_seconds=slowest,
        loads_by_scans=scans_after - scans_before,
        loads_by_log=logged,
        cache=counts,
        worker_cpu=worker_cpu,
    )


def stampede_runs(
    stacks: Stacks,
    projects: Projects,
    redis: RedisServer,
    fresh: FreshIds,
    args: argparse.Namespace,
) -> list[Stampede]:
    """cache=none, then cache=redis with one worker and with two."""
    return [
        stampede_run(stacks, projects.none, "cache=none", fresh, args, workers=1),
        *(
            stampede_run(
                stacks,
                projects.redis,
                f"cache=redis, {workers} worker{'s' if workers > 1 else ''}",
                fresh,
                args,
                workers=workers,
                REDIS_URL=redis.url,
            )
            for workers in (1, 2)
        ),
    ]


# ---------------------------------------------------------------------------- report


def reads_table(results: Sequence[Measured]) -> str:
    """req/s, p50, p99, the ratio to the floor and CPU per request of every read run."""
    floor_rps = results[0].wrk.rps
    rows = [
        [
            m.label,
            m.ids.describe(),
            f"{m.wrk.rps:,.0f}",
            f"{m.wrk.p50_ms:.1f} ms",
            f"{m.wrk.p99_ms:.1f} ms",
            ratio(m.wrk.rps, floor_rps),
            m.per_request_ms(m.cpu.app),
            m.per_request_ms(m.cpu.database),
            m.per_request_ms(m.redis_cpu) if m.redis_cpu else "-",
            describe_counts(m.cache),
            m.errors(),
            m.cpu.steal(),
        ]
        for m in results
    ]
    headers = [
        "stack", "ids", "req/s", "p50", "p99", "x floor", "app CPU/req ms", "PostgreSQL",
        "Redis", "cache hit / miss / error", "wrk errors", "steal",
    ]  # fmt: skip
    return table(headers, rows)


def ratios(results: Sequence[Measured]) -> list[str]:
    """The ratios of req/s the issue asks for."""
    by_label = {m.label.split(":")[0]: m.wrk.rps for m in results}
    pairs = [
        ("hit / floor", "service, cache hit", "floor"),
        ("miss / floor", "service, cache miss", "floor"),
        ("hit / miss", "service, cache hit", "service, cache miss"),
        ("hit / cached floor", "service, cache hit", "floor, cached"),
        ("miss / cache=none", "service, cache miss", "service, cache=none"),
    ]
    return [
        f"  {name:<20} {by_label[top] / by_label[bottom]:.2f}"
        for name, top, bottom in pairs
        if by_label.get(bottom)
    ]


def outage_table(results: Sequence[Measured]) -> str:
    """p50, p99, max and failures of the outage runs."""
    rows = [
        [
            m.label,
            f"{m.wrk.rps:,.0f}",
            f"{m.wrk.p50_ms:.1f} ms",
            f"{m.wrk.p99_ms:.1f} ms",
            f"{m.wrk.max_ms:.0f} ms",
            str(m.wrk.non_2xx),
            str(m.wrk.socket_errors),
            str(m.wrk.timeouts),
            describe_counts(m.cache),
        ]
        for m in results
    ]
    headers = [
        "Redis", "req/s", "p50", "p99", "max", "non-2xx", "socket errors", "timeouts",
        "cache hit / miss / error",
    ]  # fmt: skip
    return table(headers, rows)


def stampede_table(results: Sequence[Stampede]) -> str:
    """Database loads per cold key, counted two ways, and how the requests were answered."""
    rows = [
        [
            s.label,
            f"{s.rounds} x {s.requests}",
            f"{s.loads_by_scans / s.rounds:g}",
            f"{s.loads_by_log / s.rounds:g}",
            ", ".join(f"{count} x {status}" for status, count in sorted(s.statuses.items())),
            f"{s.slowest_seconds * 1000:.0f} ms",
            describe_counts(s.cache),
            " + ".join(f"{seconds:.2f}" for seconds in s.worker_cpu),
        ]
        for s in results
    ]
    headers = [
        "service", "cold keys x requests", "DB loads per key (idx_scan)", "(query log)",
        "answers", "slowest round", "cache hit / miss / error", "worker CPU s",
    ]  # fmt: skip
    return table(headers, rows)


def report(
    header: Sequence[str],
    args: argparse.Namespace,
    reads: Sequence[Measured],
    outages: Sequence[Measured],
    stampedes: Sequence[Stampede],
) -> None:
    """Print the tables and notes on stdout."""
    print()
    print("\n".join(header))
    print(
        f"load:       wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --timeout"
        f" {args.wrk_timeout:g}s after a {args.warmup:g} s warm-up; {PRODUCTS:,} products,"
        f" hot set 1..{HOT_IDS}"
    )
    print(
        f"note:       a shared {len(os.sched_getaffinity(0))}-core VM: wrk, the apps, Redis and"
        " PostgreSQL share these cores with other work; compare rows of this run only"
    )
    if reads:
        print()
        print("GET /products/{id}, one worker, c=" + str(args.connections))
        print("(CPU per request in ms: the worker, the whole PostgreSQL server, redis-server)")
        if args.rounds > 1:
            print(f"(each stack's median run by req/s of {args.rounds} rounds, taken in turns)")
        print(reads_table(reads))
        if args.rounds > 1:
            for m in reads:
                for note in m.notes:
                    print(f"  {m.label}: {note}")
        print()
        print("ratios of req/s:")
        print("\n".join(ratios(reads)))
    if outages:
        print()
        print(f"Redis outages: the cache=redis service over the hot set, c={args.connections}")
        print(outage_table(outages))
        for m in outages:
            for note in m.notes:
                print(f"  {m.label}: {note}")
    if stampedes:
        print()
        print("Stampede: concurrent requests for one product nobody has asked for")
        print(stampede_table(stampedes))


def chart(
    args: argparse.Namespace,
    reads: Sequence[Measured],
    outages: Sequence[Measured],
    stampedes: Sequence[Stampede],
) -> None:
    """The run's PNG: req/s and CPU of the reads, p99 of the outages, loads of the stampede."""
    panels = []
    if reads:
        floor = reads[0].label
        panels += [
            Panel(
                f"req/s at c={args.connections}",
                {m.label: m.wrk.rps for m in reads},
                baseline=floor,
            ),
            Panel(
                "app CPU per request",
                {m.label: m.wrk.per_request_ms(m.cpu.app) for m in reads},
                unit="ms",
                digits=2,
                baseline=floor,
            ),
        ]
    if outages:
        panels.append(
            Panel(
                "Redis outages: p99",
                {m.label: m.wrk.p99_ms for m in outages},
                unit="ms",
            )
        )
    if stampedes:
        panels.append(
            Panel(
                "stampede: DB loads per cold key",
                {s.label: s.loads_by_scans / s.rounds for s in stampedes},
                digits=1,
            )
        )
    if panels:
        write_chart(args.chart, "GET /products/{id} with and without a cache", panels)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser, duration=10.0)
    add_chart_argument(parser, "cache_read")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of the reads, each stack once a round"
    )
    parser.add_argument("--stampede-requests", type=int, default=200)
    parser.add_argument("--stampede-rounds", type=int, default=5, help="cold keys per stampede")
    parser.add_argument(
        "--parts",
        default="reads,outage,stampede",
        help="comma-separated: reads, outage, stampede (default: all)",
    )
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    if unknown := args.parts - {"reads", "outage", "stampede"}:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


def prepare_projects(workdir: Path, args: argparse.Namespace) -> tuple[Projects, Project]:
    """Render and install both projects; returns them, and the cache=redis one installed."""
    redis, none = (
        prepare(workdir / f"cache-{cache}", vcs_ref=args.vcs_ref, cache=cache)
        for cache in ("redis", "none")
    )
    return Projects(redis=redis.path, none=none.path), redis


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, seed, serve, load, report; clean up whatever happens."""
    args = parse_args(argv)
    require_tools("wrk", "redis-server")
    stop_on_sigterm()
    with scratch_directory("keel-bench-cache-", keep=args.keep) as workdir:
        projects, installed = prepare_projects(workdir, args)
        python = installed.python
        versions = package_versions(python, (*VERSIONS_OF, "redis", "hiredis"))
        servers = {
            **postgres_line(python),
            "redis": f"redis-server {redis_version()}, started by the benchmark",
        }
        header = machine_info(versions, servers)
        reads: list[Measured] = []
        outages: list[Measured] = []
        stampedes: list[Stampede] = []
        namespace = f"CACHE_NAMESPACE={NAMESPACE}"
        with (
            seeded_database(installed, workdir, PRODUCTS, [namespace]) as database,
            Processes() as processes,
        ):
            header.append(f"service:    {database.budget.line}")
            stacks = Stacks(processes, workdir, python, database)
            redis = RedisServer(processes, workdir, "redis")
            redis.start()
            fresh = FreshIds(HOT_IDS + 1, PRODUCTS)
            if "reads" in args.parts:
                reads = read_runs(stacks, projects, redis, fresh, args)
            if "outage" in args.parts:
                outages = outage_runs(stacks, projects, args)
            if "stampede" in args.parts:
                stampedes = stampede_runs(stacks, projects, redis, fresh, args)
        report(header, args, reads, outages, stampedes)
        chart(args, reads, outages, stampedes)


if __name__ == "__main__":
    run_main(main)
