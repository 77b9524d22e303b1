"""The picture of a benchmark's run: one PNG of horizontal bar panels, one panel per figure.

Every script builds a few Panels from its results (say, req/s and CPU per request of each stack)
and writes them with write_chart to its --chart path, by default docs/charts/NAME.png, which
docs/benchmarks.md shows (inside docs/, so that the documentation site has them too).
matplotlib is imported only when a chart is written, so the scripts' --help and keel's tests of
them stay fast.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import log

CHARTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "charts"
BASELINE_COLOR, BAR_COLOR, TARGET_COLOR = "#9e9e9e", "#3b75af", "#c0392b"


@dataclass(frozen=True)
class Panel:
    """One figure of every stack: a bar per stack, its value written at the bar's end.

    baseline: the stack the others are compared with, drawn grey (the floor, the bare app); or
    several, when each group of stacks has its own (a floor per database engine).
    target: a vertical dashed line, e.g. DESIGN's 0.9 x bare on a ratio panel.
    """

    title: str
    values: Mapping[str, float]
    unit: str = ""
    digits: int = 0
    baseline: str | tuple[str, ...] = ""
    target: float | None = None

    def is_baseline(self, name: str) -> bool:
        """Whether the stack is drawn grey."""
        return name in self.baseline if isinstance(self.baseline, tuple) else name == self.baseline

    def label(self, value: float) -> str:
        """A bar's value as the tables print it."""
        return f"{value:,.{self.digits}f}{' ' + self.unit if self.unit else ''}"


def add_chart_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """--chart PATH, by default docs/charts/NAME.png; --chart '' writes none."""
    parser.add_argument(
        "--chart",
        type=Path,
        default=CHARTS_DIR / f"{name}.png",
        help="write the run's PNG chart here ('' for none; default: %(default)s)",
    )


def run_note() -> str:
    """When and how loaded the machine was, for the chart's foot."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC,"
        f" {len(os.sched_getaffinity(0))} cores, load average {load}"
    )


def write_chart(
    path: Path | None, title: str, panels: Sequence[Panel], note: str = ""
) -> Path | None:
    """Draw the panels in a grid of up to three columns (two for four panels) into a PNG at
    `path` (None or '': no chart). Returns the path written."""
    if path is None or str(path) in {"", "."}:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    columns = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    tallest = max(len(panel.values) for panel in panels)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(4.6 * columns, (0.42 * tallest + 1.1) * rows + 0.6),
        squeeze=False,
    )
    for axis, panel in zip(axes.flat, panels, strict=False):
        names = list(panel.values)[::-1]  # first stack on top
        values = [panel.values[name] for name in names]
        colors = [BASELINE_COLOR if panel.is_baseline(name) else BAR_COLOR for name in names]
        bars = axis.barh(names, values, color=colors)
        axis.bar_label(bars, [panel.label(v) for v in values], padding=3, fontsize=8)
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlim(0, max([*values, panel.target or 0, 1e-9]) * 1.3)
        if panel.target is not None:
            axis.axvline(panel.target, color=TARGET_COLOR, linestyle="--", linewidth=1)
        axis.tick_params(labelsize=8)
        axis.spines[["top", "right"]].set_visible(False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=11)
    figure.text(0.01, 0.005, note or run_note(), fontsize=7, color="#555555")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    log(f"chart: {path}")
    return path
