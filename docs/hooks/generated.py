"""The docs' generated sections, from copier.yml, the test tables and the real budget computation.

A generated section stands in its page between `<!-- keel:NAME -->` and `<!-- /keel:NAME -->`, and
is committed, so the page reads the same in the repository as on the site. `make docs` (this file
run as a script) writes every section afresh; tests/test_docs.py fails when one is stale; as an
MkDocs hook it fills the sections again at build time, so the site can never be stale.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
COPIER_YML = ROOT / "copier.yml"
EXTENSIONS = ROOT / "extensions" / "keel.py"

TESTS = ROOT / "tests"

DOCS = ROOT / "docs"
SECTION = re.compile(r"(<!-- keel:([a-z-]+) -->\n)(.*?)(<!-- /keel:\2 -->)", re.DOTALL)

# 3 replicas x 4 web workers on PostgreSQL's default max_connections.
EXAMPLE: dict[str, int] = {
    "replicas": 3,
    "web_workers": 4,
    "queue_workers": 0,
    "max_connections": 100,
    "reserved_connections": 10,
}
REFUSED: dict[str, int] = {**EXAMPLE, "replicas": 10, "web_workers": 8}
# SQLAlchemy's QueuePool defaults: pool_size 5 + max_overflow 10.
SQLALCHEMY_DEFAULT_PER_PROCESS = 5 + 10
NATIVE_TYPES = ("bool", "float", "int", "str")
# Entities rather than the characters, which ruff flags as confusable with x and -.
TIMES = "&times;"
MINUS = "&minus;"


@functools.cache
def budget_module() -> ModuleType:
    """The generated service's budget module, loaded the way the template's extension loads it."""
    spec = importlib.util.spec_from_file_location("keel_extensions", EXTENSIONS)
    assert spec is not None and spec.loader is not None
    extensions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extensions)
    module: ModuleType = extensions.load_budget_module()
    return module


def code(text: str) -> str:
    """An inline code span."""
    return f"`{text}`"


def escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


# Defaults computed by more than a short expression, in words. Any other default longer than
# SHORT_DEFAULT is refused at build time, so a new one cannot reach the page unread.
DEFAULTS_IN_WORDS = {
    "project_name": "none: required",
    "project_slug": "`project_name` in lowercase, with dashes between words",
    "package_name": (
        "`project_slug` with underscores, at most 48 characters; a Python keyword or a module"
        " the service imports gets a trailing `_`"
    ),
    "db_max_connections": (
        "the engine's own: 100 for PostgreSQL, 151 for MySQL, 20 for SQLite; none when the"
        " deployment needs more, and the prompt shows the least that fits"
    ),
}
SHORT_DEFAULT = 60


def describe_default(name: str, question: dict[str, Any]) -> str:
    """The default: as written in copier.yml when short, else in words."""
    if name in DEFAULTS_IN_WORDS:
        return DEFAULTS_IN_WORDS[name]
    if "default" not in question:
        placeholder = question.get("placeholder")
        return f"none, e.g. {code(str(placeholder))}" if placeholder else "none"
    default = question["default"]
    text = default if isinstance(default, str) else json.dumps(default)
    if len(text) > SHORT_DEFAULT or "{%" in text:
        raise PluginError(f"docs: say {name}'s default in words in DEFAULTS_IN_WORDS")
    return escape(code(text))


def describe_choices(choices: Any) -> str:
    """Choice values in code, each with its label when the label says more."""
    if not choices:
        return ""
    pairs = choices.items() if isinstance(choices, dict) else ((str(c), c) for c in choices)
    lines = []
    for label, value in pairs:
        value = value["value"] if isinstance(value, dict) else value
        text = code(str(value))
        lines.append(text if str(label) == str(value) else f"{text}: {escape(str(label))}")
    return "<br>".join(lines)


def describe_when(question: dict[str, Any]) -> str:
    """When copier asks the question."""
    when = question.get("when", True)
    if when is True:
        return "always"
    if when is False:
        return "never (fixed)"
    condition = str(when).strip().removeprefix("{{").removesuffix("}}").strip()
    return f"if {code(condition)}"


def questions_table() -> str:
    """A Markdown table of every question in copier.yml."""
    data = yaml.safe_load(COPIER_YML.read_text(encoding="utf-8"))
    rows = [
        "| Question | Type | Help | Default | Choices | Asked |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in data.items():
        if name.startswith("_"):
            continue
        question = spec if isinstance(spec, dict) else {"default": spec}
        inferred = type(question.get("default")).__name__
        kind = question.get("type") or (inferred if inferred in NATIVE_TYPES else "yaml")
        cells = [
            code(name),
            kind,
            escape(str(question.get("help", ""))),
            describe_default(name, question),
            describe_choices(question.get("choices")),
            escape(describe_when(question)),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def budget_example() -> str:
    """The worked example, computed by the service's own compute_budget."""
    module = budget_module()
    budget = module.compute_budget(**EXAMPLE)
    replicas, web, queue = EXAMPLE["replicas"], EXAMPLE["web_workers"], EXAMPLE["queue_workers"]
    max_conn, reserved = EXAMPLE["max_connections"], EXAMPLE["reserved_connections"]
    peak = budget.processes * budget.pool_size
    default_peak = budget.processes * SQLALCHEMY_DEFAULT_PER_PROCESS
    return "\n".join(
        [
            f"{replicas} replicas {TIMES} {web} web workers + {queue} queue workers,"
            f" on a database with max_connections {max_conn}, {reserved} reserved:",
            "",
            "| | Value | Why |",
            "|---|---|---|",
            f"| processes P | {budget.processes} | {replicas} {TIMES} {web} + {queue} |",
            f"| available | {budget.available} | {max_conn} {MINUS} {reserved} |",
            f"| `pool_size` K | {budget.pool_size} |"
            f" {budget.available} // {budget.processes}, the whole share, opened lazily |",
            f"| total at peak | {peak} | {budget.processes} {TIMES} {budget.pool_size}"
            f" ≤ {budget.available} |",
            "",
            "The service logs this at startup:",
            "",
            "```text",
            budget.describe(),
            "```",
            "",
            f"SQLAlchemy's default pool (5 + 10 per process) on the same deployment asks for"
            f" {budget.processes} {TIMES} {SQLALCHEMY_DEFAULT_PER_PROCESS} = **{default_peak}**"
            f" connections from a server that accepts {max_conn}.",
        ]
    )


def budget_refused() -> str:
    """A deployment the budget refuses, with the exact message."""
    try:
        budget_module().compute_budget(**REFUSED)
    except ValueError as error:
        message = str(error)
    else:
        raise PluginError(f"docs: the refused example {REFUSED} fits the budget; pick another")
    return "\n".join(
        [
            f"{REFUSED['replicas']} replicas {TIMES} {REFUSED['web_workers']} web workers on"
            f" max_connections {REFUSED['max_connections']},"
            f" {REFUSED['reserved_connections']} reserved:",
            "",
            "```text",
            message,
            "```",
        ]
    )


def keel_test_module(name: str) -> ModuleType:
    """One of keel's test modules (matrix, test_validation), imported as the test suite does."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return importlib.import_module(name)


def answer_cell(value: Any) -> str:
    """An answer as a table cell; a yes/no question reads yes or no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escape(str(value))


def matrix_table() -> str:
    """Every combination the suite renders, installs and tests, with the servers it needs."""
    matrix = keel_test_module("matrix")
    combos = matrix.full_matrix()
    smoke = set(matrix.smoke_matrix())
    heavy = set(matrix.heavy_matrix())
    names = [name for axis in matrix.AXES for name in axis]
    rows = [
        f"{len(combos)} combinations; the {len(smoke)} marked smoke run in `make test-fast`; the"
        f" {len(heavy)} marked slow tests run their generated tests marked `slow` too, and between"
        " them answer every two questions in every way the matrix does.",
        "",
        "| Id | " + " | ".join(code(name) for name in names) + " | Servers | Smoke | Slow tests |",
        "|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for combo in combos:
        answers = dict(combo.answers)
        cells = [code(combo.id)]
        cells += [answer_cell(answers[name]) if name in answers else "" for name in names]
        cells.append(", ".join(service for service, _ in combo.services()) or "none")
        cells.append("yes" if combo in smoke else "")
        cells.append("yes" if combo in heavy else "")
        rows.append("| " + " | ".join(cells) + " |")
    variants = matrix.deployment_variants()
    sizes = ["replicas", "web_workers", "queue_workers", "db_reserved_connections"]
    sizes.append("db_max_connections")
    rows += [
        "",
        f"And {len(variants)} deployment-size variants, each also installed and tested, at sizes"
        " other than the defaults (the reasons are in `tests/matrix.py`):",
        "",
        "| Id | " + " | ".join(code(name) for name in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for variant in variants:
        answers = dict(variant.answers)
        cells = [code(variant.id)] + [escape(str(answers.get(name, ""))) for name in sizes]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def bad_answers_table() -> str:
    """Each bad answer of the validation tests, with the message copier really prints."""
    validation = keel_test_module("test_validation")
    rows = ["| Answers | Message |", "|---|---|"]
    cases = validation.REFUSED + validation._not_offered_yet()
    with tempfile.TemporaryDirectory() as scratch:
        for number, (_, answers, _, _) in enumerate(cases):
            try:
                validation._copy(Path(scratch) / str(number), answers)
            except ValueError as error:
                message = str(error).strip()
            else:
                raise PluginError(f"docs: {answers} was accepted; the validation tests must fail")
            given = " ".join(code(f"{name}={value!r}") for name, value in answers.items())
            rows.append(f"| {given} | {escape(message)} |")
    return "\n".join(rows)


GENERATORS = {
    "questions": questions_table,
    "matrix": matrix_table,
    "bad-answers": bad_answers_table,
    "budget-example": budget_example,
    "budget-refused": budget_refused,
}


def fill(markdown: str) -> str:
    """The page with each generated section written afresh."""

    def generated(match: re.Match[str]) -> str:
        opening, name, _, closing = match.groups()
        if name not in GENERATORS:
            raise PluginError(f"docs: no generator for the section {name!r}")
        return f"{opening}\n{GENERATORS[name]()}\n\n{closing}"

    return SECTION.sub(generated, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs: fill the page's generated sections."""
    return fill(markdown)


def main() -> None:
    """Write every page's generated sections afresh; name the pages that changed."""
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        filled = fill(text)
        if filled != text:
            page.write_text(filled, encoding="utf-8")
            print(f"docs: wrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
