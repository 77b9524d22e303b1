"""The prompts as a person meets them: copier in a real pseudo-terminal, 80 columns wide.

A refusal is shown in prompt_toolkit's one-line toolbar under the answer, cut at the terminal's
width: each test waits for the whole message, so a message that does not fit is a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
import yaml
from matrix import ROOT, questions

COLUMNS = 80
SHOW_CURSOR = "\x1b[?25h"  # an input prompt has drawn itself and waits for keys
ERASE_LINE = "\x15"  # Ctrl-U: erase the default before typing over it
ENTER = "\r"
DOWN = "\x1b[B"
TIMEOUT = 60  # generous: a loaded machine is slow, never wrong


class Terminal:
    """One interactive `copier copy` session."""

    def __init__(self, destination: Path, *options: str) -> None:
        # No cursor position requests: pexpect never answers them, so prompt_toolkit would wait.
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.child = pexpect.spawn(
            sys.executable,
            [
                "-m",
                "copier",
                "copy",
                "--trust",
                "--vcs-ref",
                "HEAD",
                *options,
                str(ROOT),
                str(destination),
            ],
            env=env,
            dimensions=(24, COLUMNS),
            encoding="utf-8",
            timeout=TIMEOUT,
        )

    def answer(self, help_text: str, typed: str | None = None) -> None:
        """Wait for the input prompt showing help_text; type over its default, or keep it."""
        self.child.expect_exact(help_text)
        self.child.expect_exact(SHOW_CURSOR)
        self.child.send(ENTER if typed is None else ERASE_LINE + typed + ENTER)

    def choose(self, help_text: str, last_choice: str, downs: int = 0) -> None:
        """Wait for the select prompt ending in last_choice; move down `downs` times and pick."""
        self.child.expect_exact(help_text)
        self.child.expect_exact(last_choice)
        self.child.send(DOWN * downs + ENTER)

    def confirm(self, help_text: str, yes: bool) -> None:
        self.child.expect_exact(help_text)
        self.child.expect_exact(SHOW_CURSOR)
        self.child.send("y" if yes else "n")

    def refused(self, message: str) -> None:
        """The toolbar shows the whole message, one line that fits the terminal."""
        assert len(message) <= COLUMNS
        self.child.expect_exact(message)
        self.child.expect_exact(SHOW_CURSOR)

    def retype(self, typed: str) -> None:
        self.child.send(ERASE_LINE + typed + ENTER)

    def finish(self) -> None:
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0, self.child.before

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


Start = Callable[..., Terminal]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Start]:
    sessions: list[Terminal] = []

    def start(*options: str) -> Terminal:
        session = Terminal(tmp_path / "service", *options)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def _answers(destination: Path) -> dict[str, object]:
    return yaml.safe_load((destination / ".copier-answers.yml").read_text(encoding="utf-8"))


def test_a_whole_session_with_refusals_keeps_every_answer(terminal: Start, tmp_path: Path) -> None:
    session = terminal()
    session.answer("Human-readable name", "")
    session.refused("project_name is required: the service's name, e.g. Orders API")
    session.retype("Orders API")
    for help_text in ("Distribution and directory", "Python package name", "One-line", "Your name"):
        session.answer(help_text)
    session.answer("Your email")
    session.choose("Oldest Python the service supports", "3.13")
    session.choose("Database engine", "No database")
    session.confirm("Connect through PgBouncer", yes=False)
    session.choose("Cache backend", "No cache")
    session.choose("Background work", "Dramatiq (threads and processes, on Redis or RabbitMQ)")
    session.choose("Metrics, served on a port", "No metrics")
    session.answer("Replicas (containers", "abc")
    session.refused("replicas must be a whole number, got 'abc'")
    session.retype("8")
    session.answer("Web worker processes", "8")
    session.answer("Connections kept back")
    # PostgreSQL's default 100 cannot serve 64 processes: no default, the least that fits instead.
    session.child.expect_exact("Connections the database accepts")
    session.child.expect_exact("at least 138")
    session.child.expect_exact(SHOW_CURSOR)
    session.retype("100")
    session.refused("db_max_connections must be at least 138: 10 reserved + 64 processes x 2")
    session.retype("138")
    session.confirm("Kubernetes manifests", yes=True)
    session.finish()

    answers = _answers(tmp_path / "service")
    assert answers["project_name"] == "Orders API"
    assert (answers["replicas"], answers["web_workers"]) == (8, 8)
    assert (answers["db_reserved_connections"], answers["db_max_connections"]) == (10, 138)
    assert "DB_MAX_CONNECTIONS=138" in (tmp_path / "service/.env.example").read_text("utf-8")


def test_arq_is_offered_only_with_redis(terminal: Start, tmp_path: Path) -> None:
    session = terminal(
        "--defaults",
        "--data",
        "project_name=Orders",
        "--data",
        "cache=memory",
        "--ask",
        "task_queue",
    )
    # The choice stays in the list, disabled, with its reason on the same line.
    line = "- arq (asyncio, on the project's Redis) (task_queue=arq needs cache=redis)"
    assert len("   " + line) <= COLUMNS
    session.child.expect_exact("Background work")
    session.child.expect_exact(line)
    # Moving down skips the disabled choice: one step lands on Celery.
    session.choose("", "Dramatiq (threads and processes", downs=1)
    session.finish()
    assert _answers(tmp_path / "service")["task_queue"] == "celery"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["replicas=abc"], "replicas must be a whole number, got 'abc'"),
        (["db_max_connections=-5"], "db_max_connections must be between 2 and 100000"),
        (
            ["replicas=8", "web_workers=8"],
            "db_max_connections must be at least 138: 10 reserved + 64 processes x 2",
        ),
    ],
    ids=["not-a-number", "negative", "defaults-cannot-fit"],
)
def test_command_line_refusal_is_one_line(tmp_path: Path, data: list[str], message: str) -> None:
    # --data and --defaults answers meet the same validators; copier's CLI exits with the line.
    options = [option for item in ["project_name=Orders", *data] for option in ("--data", item)]
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--vcs-ref", "HEAD", "--defaults"]
    result = subprocess.run(
        [*command, *options, str(ROOT), str(tmp_path / "service")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "service").exists()


def test_every_help_fits_on_its_prompt_line() -> None:
    """copier shows a question's help after a two-column emoji and a space, cut at the width."""
    for name, spec in questions().items():
        help_text = str(spec.get("help", ""))
        assert help_text, f"{name} has no help"
        assert len(help_text) <= COLUMNS - 3, f"{name}'s help is cut at {COLUMNS} columns"
