"""Benchmark: the middleware and metrics stack against the same app without it, in one run.

Renders keel (the working tree, uncommitted changes included) twice into a temporary directory,
with database=none, cache=none and one web worker, installs both with uv, and serves them side
by side under their own gunicorn.conf.py (uvicorn worker, uvloop, httptools), production
settings:

- full: metrics=prometheus, the service as generated: every middleware (request id,
  Server-Timing and the slow-request log, Prometheus metrics written to the multiprocess
  directory, GZip) and the lifespan's metrics sampler;
- no gzip: the full project without Starlette's GZipMiddleware, to tell its share apart;
- bare: metrics=none, the same create_app() with its middleware list emptied
  (benchmarks/bare_app.py): no middleware, no metrics.

wrk drives GET /health, the cheapest route, where the stack's cost is the largest share of a
request. After a warm-up of each, they are measured in turn, in a rotating order, for --rounds
rounds, so that all see the same neighbours. The script prints every round's req/s, p50, p99
and worker CPU per request, then the medians, each stack's ratio to bare and its overhead.
Last, benchmarks/asgi_calls.py times the same three stacks in-process, the ASGI app called
directly: figures that stay steady when other processes share the machine. It asserts nothing:
it is a measurement to record.

Run from the repository root:  uv run python benchmarks/middleware_overhead.py   (about 2 minutes)
Needs: wrk (Debian: apt-get install wrk), uv, Python 3.11.

Options worth knowing (--help lists them all):
    --projects FULL BARE   benchmark two already generated, perhaps hand-edited, projects
    --path PATH            another route than /health
    --keep                 keep the rendered projects and the servers' logs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from db_read import (
    BENCH_DIR,
    PACKAGE,
    PG_HOST,
    Processes,
    WrkResult,
    children_of,
    cpu_seconds,
    free_port,
    install,
    log,
    project_env,
    render,
    run,
    run_main,
    run_wrk,
    scratch_directory,
    stop_on_sigterm,
    table,
)

READY_TIMEOUT_SECONDS = 60.0
ASGI_CALLS = BENCH_DIR / "asgi_calls.py"
ASGI_REQUESTS = 20_000
STACKS = ("full", "no gzip", "bare")
VERSIONS_OF = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "prometheus-client")


@dataclass
class Stack:
    """One running server under test."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def worker_pid(self) -> int:
        """gunicorn's only worker."""
        children = children_of(self.process.pid)
        if not children:
            raise SystemExit(f"{self.name}: gunicorn has no worker; see {self.log}")
        return children[0]


@dataclass
class Round:
    """One measured wrk run of one stack, with the worker's CPU time."""

    wrk: WrkResult
    worker_cpu_seconds: float

    @property
    def cpu_per_request_us(self) -> float:
        """Worker CPU microseconds per answered request."""
        return self.worker_cpu_seconds * 1e6 / self.wrk.requests if self.wrk.requests else 0.0


def start(
    processes: Processes, name: str, project: Path, env: dict[str, str], workdir: Path, *app: str
) -> Stack:
    """gunicorn with the project's gunicorn.conf.py; `app` overrides its wsgi_app."""
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    with log_path.open("wb") as output:
        process = processes.start(
            [project / ".venv" / "bin" / "python", "-m", "gunicorn", *app],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    stack = Stack(name, process, f"http://{env['HOST']}:{env['PORT']}", log_path)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(stack.url + "/ready", timeout=2) as response,
        ):
            if response.status == 200:
                return stack
        time.sleep(0.2)
    raise SystemExit(
        f"{name} did not become ready; its log ends with:\n{log_path.read_text()[-3000:]}"
    )


def measure(stack: Stack, args: argparse.Namespace, seconds: float) -> Round:
    """One wrk run against the stack, with the CPU its worker used meanwhile."""
    worker = stack.worker_pid()
    before = cpu_seconds(worker)
    result = run_wrk(
        stack.url,
        connections=args.connections,
        seconds=seconds,
        threads=args.threads,
        timeout_seconds=2.0,
    )
    return Round(result, cpu_seconds(worker) - before)


def report(
    rounds: dict[str, list[Round]],
    in_process: dict[str, float],
    args: argparse.Namespace,
    header: list[str],
) -> None:
    """Every round, then the medians, the ratios and the overheads, then the in-process costs."""
    rows = [
        [
            name,
            str(number),
            f"{run.wrk.rps:,.0f}",
            f"{run.wrk.p50_ms:.2f} ms",
            f"{run.wrk.p99_ms:.2f} ms",
            f"{run.cpu_per_request_us:.0f} µs",
            str(run.wrk.non_2xx + run.wrk.socket_errors + run.wrk.timeouts),
        ]
        for number in range(args.rounds)
        for name in STACKS
        for run in [rounds[name][number]]
    ]
    median_rps = {name: statistics.median(r.wrk.rps for r in runs) for name, runs in rounds.items()}
    median_cpu = {
        name: statistics.median(r.cpu_per_request_us for r in runs) for name, runs in rounds.items()
    }
    print()
    print("\n".join(header))
    print(
        f"load:       wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s GET"
        f" {args.path}, after a {args.warmup:g} s warm-up of each; stacks take turns"
    )
    print()
    headers = ["stack", "round", "req/s", "p50", "p99", "worker CPU / request", "errors"]
    print(table(headers, rows))
    print()
    bare_rps, bare_cpu = median_rps["bare"], median_cpu["bare"]
    summary = [
        [
            name,
            f"{median_rps[name]:,.0f}",
            f"{median_rps[name] / bare_rps:.3f}",
            f"{100 * (1 - median_rps[name] / bare_rps):.1f}%",
            f"{median_cpu[name]:.0f} µs",
            f"{median_cpu[name] - bare_cpu:+.0f} µs",
        ]
        for name in STACKS
    ]
    headers = ["stack", "median req/s", "x bare", "overhead (req/s)", "CPU / request", "vs bare"]
    print(table(headers, summary))
    print()
    print(
        f"in-process, GET {args.path} called {ASGI_REQUESTS:,} times in a row, fastest of 5:"
        f" the ASGI app's own time, without server or network"
    )
    bare = in_process["bare"]
    rows = [
        [name, f"{in_process[name]:.1f} µs", f"{in_process[name] - bare:+.1f} µs"]
        for name in STACKS
    ]
    print(table(["stack", "per request", "vs bare"], rows))


def versions(python: Path) -> str:
    """Versions of the libraries on the request path, in the full project's virtualenv."""
    code = (
        "import importlib.metadata as m, sys;"
        f"print(', '.join(f'{{p}} {{m.version(p)}}' for p in {list(VERSIONS_OF)!r}),"
        " '| python', sys.version.split()[0])"
    )
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, env=project_env()
    ).stdout.strip()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vcs-ref", default="HEAD", help="template ref; HEAD includes local edits")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the rendered projects and logs")
    parser.add_argument(
        "--projects",
        nargs=2,
        type=Path,
        metavar=("FULL", "BARE"),
        help="benchmark these generated projects (metrics=prometheus, metrics=none) instead",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, serve both, load them in turn, report; clean up whatever happens."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian), then run again")
    stop_on_sigterm()
    # product_by_id.lua appends a number to BENCH_PATH: a query string /health ignores.
    os.environ["BENCH_PATH"] = f"{args.path}?n="
    with scratch_directory("keel-bench-middleware-", keep=args.keep) as workdir:
        if args.projects is None:
            projects = {}
            for name, metrics in (("full", "prometheus"), ("bare", "none")):
                log(f"rendering keel ({args.vcs_ref}, metrics={metrics}) into {workdir / name}")
                (workdir / name).mkdir()
                answers = {"database": "none", "metrics": metrics}
                projects[name] = render(
                    workdir / name, cache="none", vcs_ref=args.vcs_ref, **answers
                )
        else:
            projects = dict(
                zip(("full", "bare"), (p.resolve() for p in args.projects), strict=True)
            )
        pythons = {}
        for name, project in projects.items():
            log(f"uv sync --python 3.11 in {project}")
            pythons[name] = install(project)
        libraries = versions(pythons["full"])
        with Processes() as processes:
            # Each stack: its project, and the app gunicorn serves instead of the generated one.
            served = {
                "full": (projects["full"], []),
                "no gzip": (projects["full"], ["bare_app:create_app_without_gzip()"]),
                "bare": (projects["bare"], ["bare_app:create_app()"]),
            }
            stacks = {}
            for name, (project, app) in served.items():
                env = project_env(
                    HOST=PG_HOST,
                    PORT=str(free_port()),
                    WEB_CONCURRENCY="1",
                    ENVIRONMENT="production",
                    PROMETHEUS_MULTIPROC_DIR=str(workdir / f"{name.replace(' ', '-')}-metrics"),
                )
                options = ["--pythonpath", str(BENCH_DIR), *app] if app else []
                stacks[name] = start(processes, name, project, env, workdir, *options)
            for name, stack in stacks.items():
                log(f"{name}: warm-up {args.warmup:g} s")
                measure(stack, args, args.warmup)
            rounds: dict[str, list[Round]] = {name: [] for name in STACKS}
            for number in range(args.rounds):
                for offset in range(len(STACKS)):
                    name = STACKS[(number + offset) % len(STACKS)]
                    log(f"round {number + 1}/{args.rounds}: {name}, {args.duration:g} s")
                    rounds[name].append(measure(stacks[name], args, args.duration))
        log(f"in-process: {ASGI_REQUESTS:,} calls of each stack, 5 times")
        command = [pythons["full"], ASGI_CALLS, PACKAGE, args.path, str(ASGI_REQUESTS)]
        in_process = json.loads(run(command, cwd=projects["full"], env=project_env()))
        header = [
            f"date:       {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
            f"machine:    {len(os.sched_getaffinity(0))} cores; wrk and the worker share them",
            f"libraries:  {libraries}",
        ]
        report(rounds, in_process, args, header)


if __name__ == "__main__":
    run_main(main)
