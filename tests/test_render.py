"""Every combination renders clean: no Jinja left over, parseable config, tidy text, ruff-clean.

Rendering is in-process with copie (under a second per combination); ruff is the one in keel's
own dev environment, run with the rendered project's configuration.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import copier
import pytest
import yaml
from matrix import ROOT, Combo, default_combo
from pymarkdown.api import PyMarkdownApi

if TYPE_CHECKING:
    from conftest import Render

# Jinja delimiters left in the output. `${{ }}` (GitHub Actions, compose) and `${#var}` (shell) are
# not Jinja; a closing `}}` counts only after a space, as in `{{ name }}`, since nested Python
# literals such as {"a": {"b": 1}} legitimately end in `}}`.
LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|(?<!\$)\{#|%\}|#\}|\s\}\}")
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")

# Files that are empty by convention.
MAY_BE_EMPTY = {"py.typed"}

# What a render must never contain: bytecode and tool caches, from the template folder or a run.
CACHE_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"}
CACHE_SUFFIXES = {".pyc", ".pyo", ".pyd"}

# Markdown: pymarkdown's rules, less MD013 (line length): generated prose keeps a paragraph or a
# list item on one line, since its sentences are assembled from conditionals. Two structures
# that Jinja's trim_blocks produces and no linter catches are checked besides: a list item glued
# to the end of the line before it, and the same table row or list item written twice.
MARKDOWN_RULES_OFF = ("md013",)
GLUED_LIST_ITEM = re.compile(r"\S- \*\*\w")


# The words that name each backend. A render names only what was chosen: a comment in a PostgreSQL
# project never explains SQLite, and advice names only the backends the project has.
BACKEND_WORDS: dict[tuple[str, object], tuple[str, ...]] = {
    ("database", "postgresql"): ("postgresql", "postgres", "asyncpg", "psycopg"),
    ("database", "mysql"): ("mysql", "mariadb", "asyncmy"),
    ("database", "sqlite"): ("sqlite", "aiosqlite"),
    ("db_pgbouncer", True): ("pgbouncer",),
    ("task_queue", "celery"): ("celery", "kombu"),
    ("task_queue", "dramatiq"): ("dramatiq",),
    ("task_queue", "arq"): ("arq",),
    ("server", "redis"): ("redis",),
    ("server", "rabbitmq"): ("rabbitmq", "amqp"),
    ("metrics", "prometheus"): ("prometheus",),
}
# copier's record of the answers names every answer, chosen or not.
NAMES_EVERY_ANSWER = {".copier-answers.yml"}


def _files(project: Path) -> list[Path]:
    return sorted(path for path in project.rglob("*") if path.is_file())


def _text_problems(relative: str, content: str) -> list[str]:
    problems = []
    for number, line in enumerate(content.split("\n"), start=1):
        if LEFTOVER.search(GITHUB_EXPRESSION.sub("", line)):
            problems.append(f"{relative}:{number}: Jinja left over: {line.strip()!r}")
        if line != line.rstrip():
            problems.append(f"{relative}:{number}: trailing whitespace")
    if not content:
        if Path(relative).name not in MAY_BE_EMPTY:
            problems.append(f"{relative}: empty file")
    elif not content.endswith("\n"):
        problems.append(f"{relative}: no newline at end of file")
    elif content.endswith("\n\n"):
        problems.append(f"{relative}: blank line(s) at end of file")
    return problems


def _parse_problems(path: Path, relative: str, content: str) -> list[str]:
    try:
        if path.suffix in {".yml", ".yaml"}:
            list(yaml.safe_load_all(content))
        elif path.suffix == ".toml":
            tomllib.loads(content)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        return [f"{relative}: does not parse: {error}"]
    return []


def _markdown_problems(path: Path, relative: str, content: str) -> list[str]:
    if path.suffix != ".md":
        return []
    api = PyMarkdownApi()
    for rule in MARKDOWN_RULES_OFF:
        api.disable_rule_by_identifier(rule)
    scan = api.scan_string(content)
    problems = [
        f"{relative}:{failure.line_number}: {failure.rule_id} {failure.rule_description}"
        for failure in scan.scan_failures
    ]
    seen: dict[str, int] = {}
    in_code = False
    for number, line in enumerate(content.split("\n"), start=1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        if GLUED_LIST_ITEM.search(line):
            problems.append(f"{relative}:{number}: a list item glued to the line before it")
        is_item = line.startswith(("- ", "* ")) or (line.startswith("|") and "---" not in line)
        if is_item and line in seen:
            problems.append(f"{relative}:{number}: repeats line {seen[line]}: {line[:60]!r}")
        seen.setdefault(line, number)
    return problems


def _chosen(answers: dict[str, object]) -> set[tuple[str, object]]:
    chosen = {
        (question, answers.get(question)) for question in ("database", "task_queue", "metrics")
    }
    chosen.add(("db_pgbouncer", bool(answers.get("db_pgbouncer"))))
    if answers.get("database") == "postgresql":
        # PostgreSQL's own pooler: the remedy a PostgreSQL service names for a budget too small.
        chosen.add(("db_pgbouncer", True))
    if "redis" in (answers.get("cache"), answers.get("queue_broker")) or (
        answers.get("task_queue") == "arq"
    ):
        chosen.add(("server", "redis"))
    if answers.get("queue_broker") == "rabbitmq":
        chosen.add(("server", "rabbitmq"))
    return chosen


def trace_problems(project: Path) -> list[str]:
    """Every line that names a database, queue, broker or metrics system the answers left out."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    chosen = _chosen(answers)
    others = [word for key, words in BACKEND_WORDS.items() if key not in chosen for word in words]
    named = re.compile(r"\b(" + "|".join(others) + r")\b", re.IGNORECASE)
    problems = []
    for path in _files(project):
        relative = path.relative_to(project).as_posix()
        if path.name in NAMES_EVERY_ANSWER:
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(content.split("\n"), start=1):
            if found := named.search(line):
                problems.append(f"{relative}:{number}: names {found.group(0)}: {line.strip()!r}")
    return problems


def file_problems(project: Path) -> list[str]:
    """Every problem found in the rendered files, one line each."""
    problems = [
        f"{path.relative_to(project).as_posix()}: a cache or compiled file"
        for path in project.rglob("*")
        if path.name in CACHE_NAMES or path.suffix in CACHE_SUFFIXES
    ]
    for path in _files(project):
        relative = path.relative_to(project).as_posix()
        if any(part in CACHE_NAMES for part in path.relative_to(project).parts):
            continue
        if LEFTOVER.search(relative):
            problems.append(f"{relative}: Jinja left over in the file name")
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file: nothing textual to check
        problems += _text_problems(relative, content)
        problems += _parse_problems(path, relative, content)
        problems += _markdown_problems(path, relative, content)
    return problems


def ruff(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run keel's ruff on the rendered project, with the project's own configuration."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--no-cache", "."],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )


def assert_clean(project: Path) -> None:
    """The whole set of render checks on one rendered project."""
    assert (project / "pyproject.toml").is_file(), "no pyproject.toml rendered"
    problems = file_problems(project) + trace_problems(project)
    assert not problems, "\n".join(problems)
    for arguments in (("check",), ("format", "--check", "--diff")):
        completed = ruff(project, *arguments)
        assert completed.returncode == 0, (
            f"ruff {' '.join(arguments)} failed:\n{completed.stdout}{completed.stderr}"
        )


def test_combination_renders_clean(render: Render, combo: Combo) -> None:
    project = render(combo.data())
    assert_clean(project)
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    for question, answer in combo.data().items():
        if question in recorded:
            assert recorded[question] == answer, question


@pytest.mark.smoke
def test_python_version_renders_clean(render: Render, python_version: str) -> None:
    assert_clean(render(default_combo().data(python_version=python_version)))


# The next commands copier prints after a copy, per kind of combination: (answers, lines expected
# in the message, fragments that must not appear).
NEXT_STEPS: list[tuple[dict[str, str], list[str], list[str]]] = [
    (
        {"database": "postgresql", "cache": "redis"},
        ["createdb -h 127.0.0.1 -U postgres keel_probe", "uv run alembic upgrade head"],
        ["mysql", ".worker"],
    ),
    (
        {"database": "mysql", "cache": "none", "task_queue": "celery", "queue_broker": "rabbitmq"},
        ["CREATE DATABASE keel_probe", "uv run python -m keel_probe.worker  # the Celery worker"],
        ["createdb"],
    ),
    (
        {"database": "sqlite", "cache": "memory"},
        ["uv run alembic upgrade head && uv run gunicorn", "needs no server"],
        ["createdb", "CREATE DATABASE", ".worker"],
    ),
    (
        {"database": "none", "cache": "none", "metrics": "none"},
        ["uv sync && uv run pytest", "uv run gunicorn"],
        ["alembic", "createdb", ".worker"],
    ),
]


@pytest.mark.parametrize(
    ("answers", "expected", "absent"),
    [pytest.param(*case, id=case[0]["database"]) for case in NEXT_STEPS],
)
def test_copy_ends_with_the_next_commands_for_the_combination(
    tmp_path: Path, answers: dict[str, str], expected: list[str], absent: list[str]
) -> None:
    destination = tmp_path / "service"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        copier.run_copy(
            str(ROOT),
            str(destination),
            data={"project_name": "Keel Probe", **answers},
            defaults=True,
            unsafe=True,
            vcs_ref="HEAD",
        )
    message = printed.getvalue().split(f"Keel Probe is ready in {destination}. Next:", 1)[1]
    commands = [line.strip() for line in message.strip().splitlines()]
    assert commands[0] == f"cd {destination}"
    assert commands[1].startswith("git init")
    for line in expected:
        assert any(line in command for command in commands), (line, commands)
    for fragment in absent:
        assert not any(fragment in command for command in commands), (fragment, commands)
    assert all(LEFTOVER.search(command) is None for command in commands)


def test_leftover_pattern() -> None:
    # Guards the checks above: what they must flag and what they must let through.
    for leftover in ("{{ name }}", "{% if x %}", "{# note #}", "x %}", "name }}"):
        assert LEFTOVER.search(leftover), leftover
    for legitimate in ('{"a": {"b": 1}}', "${#items[@]}", 'f"{value}"', "{}"):
        assert not LEFTOVER.search(legitimate), legitimate
    assert not LEFTOVER.search(GITHUB_EXPRESSION.sub("", "run: echo ${{ github.sha }}"))


def test_file_checks_flag_each_kind_of_problem(tmp_path: Path) -> None:
    files = {
        "ok.py": "x = 1\n",
        "py.typed": "",
        "empty.py": "",
        "no_newline.py": "x = 1",
        "blank_end.py": "x = 1\n\n",
        "spaces.py": "x = 1 \n",
        "leftover.py": "name = '{{ package_name }}'\n",
        "bad.yml": "key: [unclosed\n",
        "bad.toml": "key = \n",
        "{% if x %}name.py": "x = 1\n",
        "glued.md": "# Title\n\n- **One.** first.- **Two.** second.\n",
        "twice.md": "# Title\n\n| a | b |\n|---|---|\n| x | y |\n| x | y |\n",
        "heading.md": "# Title\n## No blank line above\n",
        "fine.md": "# Title\n\n- **One.** first.\n- **Two.** second.\n",
        "src/pkg/__pycache__/budget.cpython-311.pyc": "",
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    problems = "\n".join(file_problems(tmp_path))
    for expected in (
        "empty.py: empty file",
        "no_newline.py: no newline",
        "blank_end.py: blank line",
        "spaces.py:1: trailing whitespace",
        "leftover.py:1: Jinja left over",
        "bad.yml: does not parse",
        "bad.toml: does not parse",
        "name.py: Jinja left over in the file name",
        "glued.md:3: a list item glued",
        "twice.md:6: repeats line 5",
        "heading.md:2: MD022",
        "src/pkg/__pycache__: a cache or compiled file",
        "budget.cpython-311.pyc: a cache or compiled file",
    ):
        assert expected in problems
    assert "fine.md" not in problems
    assert "ok.py" not in problems
    assert "py.typed" not in problems


def test_trace_check_flags_a_backend_that_was_not_chosen(tmp_path: Path) -> None:
    (tmp_path / ".copier-answers.yml").write_text(
        "database: postgresql\ncache: memory\ntask_queue: celery\nqueue_broker: rabbitmq\n"
        "metrics: none\n",
        encoding="utf-8",
    )
    (tmp_path / "env.py").write_text(
        "# Batch mode recreates SQLite tables.\nimport asyncpg\n# Celery over AMQP\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text(
        "Redis is not here, nor Prometheus, nor PgBouncer; arq neither.\n", encoding="utf-8"
    )

    problems = "\n".join(trace_problems(tmp_path))

    assert "env.py:1: names SQLite" in problems
    assert "README.md:1: names Redis" in problems
    assert "env.py:2" not in problems
    assert "env.py:3" not in problems
    assert ".copier-answers.yml" not in problems
