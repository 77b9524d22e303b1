"""Benchmark: /metrics render time after many worker restarts, with and without the archive.

prometheus_client keeps a file per worker and metric type; its mark_process_dead removes only
live gauges' files, so every dead worker's counters and histograms stay and every scrape reads
them. keel's child_exit folds them into one archive file instead (infra/metrics_archive.py).

Renders keel (the working tree, uncommitted changes included) with database=sqlite,
cache=memory and metrics=prometheus, installs it with uv, then for each number of restarts runs
benchmarks/dead_workers.py with the project's Python twice: once retiring workers as
prometheus_client alone would (plain), once as keel's child_exit does (archive). Prints the files
left, their size, the median time to render /metrics and the time to retire one worker, and
writes the chart docs/charts/metrics_restarts.png.

Run from the repository root:  uv run python benchmarks/metrics_restarts.py   (about a minute)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from charts import Panel, add_chart_argument, write_chart
from harness import (
    BENCH_DIR,
    PACKAGE,
    add_project_arguments,
    log,
    prepare,
    project_env,
    run,
    run_main,
    scratch_directory,
    table,
)

SIMULATION = BENCH_DIR / "dead_workers.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    parser.add_argument("--restarts", type=int, nargs="+", default=[0, 10, 100, 500])
    parser.add_argument("--project", type=Path, help="use this generated project instead")
    add_chart_argument(parser, "metrics_restarts")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install, simulate, report."""
    args = parse_args(argv)
    with scratch_directory("keel-bench-restarts-", keep=args.keep) as workdir:
        project = prepare(
            workdir,
            vcs_ref=args.vcs_ref,
            given=args.project,
            database="sqlite",
            cache="memory",
            metrics="prometheus",
        )
        simulate: list[str | Path] = [project.python, SIMULATION, PACKAGE, workdir / "metrics"]
        rows = []
        render_ms: dict[str, float] = {}
        files: dict[str, float] = {}
        for restarts in args.restarts:
            for mode in ("plain", "archive"):
                log(f"{restarts} restarts, {mode}")
                result = json.loads(run([*simulate, str(restarts), mode], env=project_env()))
                render_ms[f"{restarts} restarts, {mode}"] = result["render_ms"]
                files[f"{restarts} restarts, {mode}"] = result["files"]
                rows.append(
                    [
                        str(restarts),
                        mode,
                        str(result["files"]),
                        f"{result['bytes'] / 1e6:.1f} MB",
                        f"{result['render_ms']:.1f} ms",
                        f"{result['retire_ms']:.2f} ms",
                    ]
                )
        print()
        print("two live workers, and the dead ones each left a dozen routes' samples")
        headers = ["restarts", "retired by", "*.db files", "on disk", "render /metrics", "retire"]
        print(table(headers, rows))
        panels = [
            Panel("render /metrics", render_ms, unit="ms", digits=1),
            Panel("*.db files in the metrics directory", files),
        ]
        write_chart(args.chart, "/metrics after worker restarts: plain or archive", panels)


if __name__ == "__main__":
    run_main(main)
