"""Benchmark: the middleware and metrics stack against the same app without it, in one run.

Renders keel (the working tree, uncommitted changes included) twice into a temporary directory,
with database=none, cache=none and one web worker, installs both with uv, and serves them side
by side under their own gunicorn.conf.py (uvicorn worker, uvloop, httptools), production
settings:

- full: metrics=prometheus, the service as generated: every middleware (request id,
  Server-Timing and the slow-request log, Prometheus metrics written to the multiprocess
  directory, compression) and the lifespan's metrics sampler;
- Starlette GZip: the full project with Starlette's GZipMiddleware as its compression, as keel
  had it until 2026-11-30: the same run's baseline for starlette-compress;
- no compression: the full project without its compression middleware, to tell its share apart;
- bare: metrics=none, the same create_app() with its middleware list emptied
  (benchmarks/bare_app.py): no middleware, no metrics;
- plain FastAPI: FastAPI() with one GET /health returning a dict (bare_app.create_plain_app),
  the same FastAPI version's bare app: DESIGN's yardstick, /health >= 0.9 x it.

wrk drives GET /health, the cheapest route, where the stack's cost is the largest share of a
request. After a warm-up of each, they are measured in turn, in a rotating order, for --rounds
rounds, so that all see the same neighbours. The script prints every round's req/s, p50, p99
and worker CPU per request, then the medians, each stack's ratio to bare and to plain FastAPI,
its overhead, and whether full meets DESIGN's 0.9 x plain FastAPI; it writes the chart
docs/charts/middleware_overhead.png.
Last, benchmarks/asgi_calls.py times the same stacks in-process, the ASGI app called
directly: figures that stay steady when other processes share the machine. It asserts nothing:
it is a measurement to record.

Run from the repository root:  uv run python benchmarks/middleware_overhead.py   (about 3 minutes)
Needs: wrk (Debian: apt-get install wrk), uv, Python 3.11.

Options worth knowing (--help lists them all):
    --projects FULL BARE   benchmark two already generated, perhaps hand-edited, projects
    --path PATH            another route than /health
    --keep                 keep the rendered projects and the servers' logs
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from charts import Panel, add_chart_argument, write_chart
from harness import (
    BENCH_DIR,
    HOST,
    PACKAGE,
    Processes,
    Server,
    WrkResult,
    add_load_arguments,
    add_project_arguments,
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
    start_gunicorn,
    stop_on_sigterm,
    table,
)

ASGI_CALLS = BENCH_DIR / "asgi_calls.py"
STACKS = ("full", "Starlette GZip", "no compression", "bare", "plain FastAPI")
PLAIN = "plain FastAPI"
# DESIGN.md: /health of the generated service at least this multiple of a bare FastAPI app's req/s.
DESIGN_TARGET = 0.9
VERSIONS_OF = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "prometheus-client")


@dataclass
class Round:
    """One measured wrk run of one stack, with the worker's CPU time."""

    wrk: WrkResult
    worker_cpu_seconds: float

    @property
    def cpu_per_request_us(self) -> float:
        """Worker CPU microseconds per answered request."""
        return self.wrk.per_request_ms(self.worker_cpu_seconds) * 1000


def measure(server: Server, args: argparse.Namespace, seconds: float) -> Round:
    """One wrk run against the stack, with the CPU its worker used meanwhile."""
    worker = server.worker_pid()
    before = cpu_seconds(worker)
    # product_by_id.lua appends a number to BENCH_PATH: a query string /health ignores.
    result = drive(server, args, seconds, script_env={"BENCH_PATH": f"{args.path}?n="})
    return Round(result, cpu_seconds(worker) - before)


def serve(processes: Processes, name: str, project: Path, workdir: Path, *app: str) -> Server:
    """gunicorn with the project's gunicorn.conf.py, one worker; `app` overrides its wsgi_app."""
    slug = name.replace(" ", "-")
    env = project_env(
        HOST=HOST,
        PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        ENVIRONMENT="production",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / f"{slug}-metrics"),
    )
    options = ["--pythonpath", str(BENCH_DIR), *app] if app else []
    # /health: the one route every stack has, plain FastAPI's included.
    log_path = workdir / f"{slug}.log"
    return start_gunicorn(processes, name, project, env, log_path, *options, ready_path="/health")


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
            f"{measured.wrk.rps:,.0f}",
            f"{measured.wrk.p50_ms:.2f} ms",
            f"{measured.wrk.p99_ms:.2f} ms",
            f"{measured.cpu_per_request_us:.0f} µs",
            str(measured.wrk.non_2xx + measured.wrk.socket_errors + measured.wrk.timeouts),
        ]
        for number in range(args.rounds)
        for name in STACKS
        for measured in [rounds[name][number]]
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
            ratio(median_rps[name], bare_rps, 3),
            ratio(median_rps[name], median_rps[PLAIN], 3),
            f"{100 * (1 - median_rps[name] / bare_rps):.1f}%",
            f"{median_cpu[name]:.0f} µs",
            f"{median_cpu[name] - bare_cpu:+.0f} µs",
        ]
        for name in STACKS
    ]
    headers = [
        "stack",
        "median req/s",
        "x bare",
        "x plain FastAPI",
        "overhead (req/s)",
        "CPU / request",
        "vs bare",
    ]
    print(table(headers, summary))
    full_ratio = median_rps["full"] / median_rps[PLAIN] if median_rps[PLAIN] else 0.0
    verdict = "meets" if full_ratio >= DESIGN_TARGET else "misses"
    print()
    print(
        f"full / plain FastAPI: {full_ratio:.3f} x req/s, {verdict} DESIGN's target of"
        f" >= {DESIGN_TARGET} x a bare app of the same FastAPI version"
    )
    print()
    print(
        f"in-process, GET {args.path} called {args.asgi_requests:,} times in a row, fastest of 5:"
        f" the ASGI app's own time, without server or network"
    )
    bare = in_process["bare"]
    rows = [
        [name, f"{in_process[name]:.1f} µs", f"{in_process[name] - bare:+.1f} µs"]
        for name in STACKS
    ]
    print(table(["stack", "per request", "vs bare"], rows))


def chart(
    rounds: dict[str, list[Round]], in_process: dict[str, float], args: argparse.Namespace
) -> None:
    """The run's PNG: median req/s, its ratio to plain FastAPI (DESIGN's 0.9 drawn), CPU."""
    rps = {name: statistics.median(r.wrk.rps for r in runs) for name, runs in rounds.items()}
    cpu = {
        name: statistics.median(r.cpu_per_request_us for r in runs) for name, runs in rounds.items()
    }
    panels = [
        Panel(f"GET {args.path}: median req/s", rps, baseline=PLAIN),
        Panel(
            "x plain FastAPI (DESIGN: >= 0.9)",
            {name: rps[name] / rps[PLAIN] if rps[PLAIN] else 0.0 for name in STACKS},
            digits=2,
            baseline=PLAIN,
            target=DESIGN_TARGET,
        ),
        Panel("worker CPU per request", cpu, unit="µs", baseline=PLAIN),
        Panel("in-process, per request", in_process, unit="µs", digits=1, baseline=PLAIN),
    ]
    title = (
        f"GET {args.path}, one worker each, c={args.connections}, medians of {args.rounds} rounds"
    )
    write_chart(args.chart, title, panels)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_load_arguments(parser, duration=8.0)
    add_chart_argument(parser, "middleware_overhead")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--asgi-requests",
        type=int,
        default=20_000,
        help="calls of each stack in each of the five in-process passes",
    )
    parser.add_argument(
        "--projects",
        nargs=2,
        type=Path,
        metavar=("FULL", "BARE"),
        help="benchmark these generated projects (metrics=prometheus, metrics=none) instead",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, serve every stack, load them in turn, report; clean up whatever happens."""
    args = parse_args(argv)
    require_tools("wrk")
    stop_on_sigterm()
    with scratch_directory("keel-bench-middleware-", keep=args.keep) as workdir:
        full_given, bare_given = args.projects or (None, None)
        full, bare = (
            prepare(workdir / name, vcs_ref=args.vcs_ref, given=given, database="none", metrics=m)
            for name, given, m in (("full", full_given, "prometheus"), ("bare", bare_given, "none"))
        )
        versions = package_versions(full.python, VERSIONS_OF)
        with Processes() as processes:
            stacks = {
                "full": serve(processes, "full", full.path, workdir),
                "Starlette GZip": serve(
                    processes,
                    "Starlette GZip",
                    full.path,
                    workdir,
                    "bare_app:create_app_with_starlette_gzip()",
                ),
                "no compression": serve(
                    processes,
                    "no compression",
                    full.path,
                    workdir,
                    "bare_app:create_app_without_compression()",
                ),
                "bare": serve(processes, "bare", bare.path, workdir, "bare_app:create_app()"),
                PLAIN: serve(processes, PLAIN, bare.path, workdir, "bare_app:create_plain_app()"),
            }
            for name, stack in stacks.items():
                log(f"{name}: warm-up {args.warmup:g} s")
                measure(stack, args, args.warmup)
            rounds = interleaved_rounds(
                STACKS, args.rounds, lambda name: measure(stacks[name], args, args.duration)
            )
        log(f"in-process: {args.asgi_requests:,} calls of each stack, 5 times")
        command = [full.python, ASGI_CALLS, PACKAGE, args.path, str(args.asgi_requests)]
        in_process = json.loads(run(command, cwd=full.path, env=project_env()))
        report(rounds, in_process, args, machine_info(versions))
        chart(rounds, in_process, args)


if __name__ == "__main__":
    run_main(main)
