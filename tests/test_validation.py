"""Bad answers are refused before anything is written, in one line naming question and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from copier.errors import UserMessageError
from matrix import choice_values, questions
from snapshot import template_snapshot

BASE = {"project_name": "Keel Probe"}

# (id, answers on top of BASE, question the message names, fragment of the rule).
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-digit-first", {"project_name": "1st Service"}, "project_name", "start with a letter"),
    ("name-empty", {"project_name": ""}, "project_name", "is required"),
    ("name-missing", {"project_name": ...}, "project_name", "is required"),
    ("name-leading-space", {"project_name": " Orders"}, "project_name", "start with a letter"),
    ("name-slash", {"project_name": "Orders/API"}, "project_name", "letters, digits, spaces"),
    ("name-too-long", {"project_name": "A" * 65}, "project_name", "at most 64"),
    ("slug-underscore", {"project_slug": "keel_probe"}, "project_slug", "single dashes"),
    ("slug-uppercase", {"project_slug": "Keel-Probe"}, "project_slug", "lowercase"),
    ("slug-double-dash", {"project_slug": "keel--probe"}, "project_slug", "single dashes"),
    ("slug-leading-dash", {"project_slug": "-keel"}, "project_slug", "start with a lowercase"),
    ("package-dash", {"package_name": "keel-probe"}, "package_name", "Python identifier"),
    ("package-uppercase", {"package_name": "Keel"}, "package_name", "lowercase Python identifier"),
    ("package-digit-first", {"package_name": "1keel"}, "package_name", "Python identifier"),
    ("package-too-long", {"package_name": "k" * 49}, "package_name", "at most 48"),
    ("package-keyword", {"package_name": "class"}, "package_name", "Python keyword"),
    ("package-soft-keyword", {"package_name": "async"}, "package_name", "Python keyword"),
    ("package-shadows-fastapi", {"package_name": "fastapi"}, "package_name", "shadow"),
    ("package-shadows-tests", {"package_name": "tests"}, "package_name", "shadow"),
    ("package-keyword-break", {"package_name": "break"}, "package_name", "try break_"),
    ("description-quote", {"description": 'Say "hi"'}, "description", "double quotes"),
    ("description-newline", {"description": "two\nlines"}, "description", "one line"),
    ("description-backslash", {"description": "C:\\orders"}, "description", "backslashes"),
    ("description-blank", {"description": "   "}, "description", "must not be empty"),
    ("description-too-long", {"description": "x" * 201}, "description", "at most 200"),
    ("author-quote", {"author_name": 'Ann "A" Lee'}, "author_name", "without quotes"),
    ("author-angle", {"author_name": "Ann <ann@example.com>"}, "author_name", "angle brackets"),
    ("email-no-at", {"author_email": "platform.example.com"}, "author_email", "name@example.com"),
    ("email-no-domain-dot", {"author_email": "platform@example"}, "author_email", "name@"),
    ("email-space", {"author_email": "plat form@example.com"}, "author_email", "name@"),
    ("python-too-old", {"python_version": "3.10"}, "python_version", "is not in"),
    ("database-unknown", {"database": "oracle"}, "database", "is not in"),
    ("cache-unknown", {"cache": "memcached"}, "cache", "is not in"),
    ("metrics-unknown", {"metrics": "statsd"}, "metrics", "is not in"),
    ("replicas-zero", {"replicas": 0}, "replicas", "between 1 and 64"),
    ("replicas-too-many", {"replicas": 65, "database": "none"}, "replicas", "between 1 and 64"),
    ("replicas-sqlite", {"replicas": 2, "database": "sqlite"}, "replicas", "database=sqlite"),
    ("web-workers-zero", {"web_workers": 0}, "web_workers", "between 1 and 64"),
    ("web-workers-too-many", {"web_workers": 65}, "web_workers", "between 1 and 64"),
    ("queue-workers-negative", {"queue_workers": -1}, "queue_workers", "between 0 and 256"),
    (
        "dramatiq-on-redis-without-redis",
        {"task_queue": "dramatiq", "queue_broker": "redis", "cache": "memory"},
        "queue_broker",
        "queue_broker=redis needs cache=redis",
    ),
    (
        "dramatiq-without-database",
        {"task_queue": "dramatiq", "queue_broker": "rabbitmq", "database": "none"},
        "task_queue",
        "needs a database",
    ),
    ("max-connections-one", {"db_max_connections": 1}, "db_max_connections", "between 2 and"),
    (
        "max-connections-too-many",
        {"db_max_connections": 100_001},
        "db_max_connections",
        "between 2 and 100000",
    ),
    ("max-connections-negative", {"db_max_connections": -5}, "db_max_connections", "between 2"),
    ("max-connections-not-a-number", {"db_max_connections": "lots"}, "db_max_connections", "whole"),
    ("replicas-not-a-number", {"replicas": "abc"}, "replicas", "must be a whole number, got 'abc'"),
    ("replicas-a-fraction", {"replicas": "1.5"}, "replicas", "must be a whole number"),
    ("replicas-huge", {"replicas": 10**30}, "replicas", "between 1 and 64"),
    # Past Python's 4300-digit limit for int(): still one short line.
    ("replicas-5000-digits", {"replicas": "9" * 5000}, "replicas", "got '99999999999999999999...'"),
    (
        "reserved-negative",
        {"db_reserved_connections": -1},
        "db_reserved_connections",
        "between 0 and 99996",
    ),
    (
        "reserved-leaves-no-room-for-the-processes",
        {"db_reserved_connections": 99_997},
        "db_reserved_connections",
        "between 0 and 99996",
    ),
    (
        "max-equals-reserved",
        {"db_max_connections": 20, "db_reserved_connections": 20},
        "db_max_connections",
        "at least 24: 20 reserved + 2 processes x 2",
    ),
    (
        "pgbouncer-max-not-above-reserved",
        {"db_pgbouncer": True, "db_reserved_connections": 200},
        "db_max_connections",
        "at least 201",
    ),
    (
        "budget-too-small-for-max-connections",
        {"web_workers": 16, "db_max_connections": 20},
        "db_max_connections",
        "at least 42: 10 reserved + 16 processes x 2",
    ),
    (
        "budget-too-small-with-reserved",
        {"web_workers": 10, "db_max_connections": 20, "db_reserved_connections": 2},
        "db_max_connections",
        "at least 22: 2 reserved + 10 processes x 2",
    ),
    (
        "budget-postgresql-80-processes",
        {"database": "postgresql", "replicas": 10, "web_workers": 8},
        "db_max_connections",
        "at least 170",
    ),
    # The issue's deployment under --defaults: PostgreSQL's default 100 is refused in one line.
    (
        "defaults-with-an-impossible-deployment",
        {"replicas": 8, "web_workers": 8},
        "db_max_connections",
        "db_max_connections must be at least 138: 10 reserved + 64 processes x 2",
    ),
    (
        "arq-without-redis",
        {"task_queue": "arq", "cache": "memory"},
        "task_queue",
        "task_queue=arq needs cache=redis",
    ),
    (
        "queue-without-database",
        {"task_queue": "arq", "database": "none"},
        "task_queue",
        "task_queue=arq needs a database",
    ),
    (
        "queue-workers-overflow-the-budget",
        {"task_queue": "arq", "queue_workers": 80, "db_max_connections": 100},
        "db_max_connections",
        "at least 174: 10 reserved + 82 processes x 2",
    ),
    (
        "celery-on-redis-without-redis",
        {"task_queue": "celery", "queue_broker": "redis", "cache": "memory"},
        "queue_broker",
        "queue_broker=redis needs cache=redis",
    ),
    (
        "celery-without-database",
        {"task_queue": "celery", "queue_broker": "rabbitmq", "database": "none"},
        "task_queue",
        "needs a database",
    ),
]

# Choices DESIGN.md plans; each one copier.yml does not offer yet must be refused until it is.
PLANNED_CHOICES = {
    "database": ["postgresql", "mysql", "sqlite", "none"],
    "cache": ["redis", "memory", "none"],
    "task_queue": ["none", "arq", "celery", "dramatiq"],
    "metrics": ["prometheus", "none"],
}


def _not_offered_yet() -> list[tuple[str, dict[str, Any], str, str]]:
    cases = []
    for question, planned in PLANNED_CHOICES.items():
        offered = {str(value) for value, _ in choice_values(question)}
        for choice in planned:
            if choice not in offered:
                cases.append(
                    (f"{question}-{choice}-not-offered", {question: choice}, question, "is not in")
                )
    return cases


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("no-database-many-replicas", {"database": "none", "replicas": 8, "web_workers": 4}),
    ("everything-off", {"database": "none", "cache": "none", "metrics": "none"}),
    ("own-slug-and-package", {"project_slug": "orders-api", "package_name": "orders"}),
    ("longest-name", {"project_name": "Orders " + "x" * 41}),  # a 48-character package
    ("description-apostrophe", {"description": "Orders café: it's fast, & <safe>"}),
    ("description-longest", {"description": "x" * 200}),
    (
        "budget-exactly-two-per-process",
        {"web_workers": 9, "db_max_connections": 20, "db_reserved_connections": 2},
    ),
    ("mysql", {"database": "mysql"}),
    (
        "postgresql-through-pgbouncer-needs-no-pool-budget",
        {"db_pgbouncer": True, "web_workers": 64},
    ),
    ("email-plus", {"author_email": "team+orders@mail.example.org"}),
    # The numbers the refusals above propose, applied.
    ("name-derives-keyword", {"project_name": "Class"}),
    ("name-derives-shadow", {"project_name": "SQLAlchemy"}),
    ("package-keyword-proposal", {"package_name": "class_"}),
    ("package-shadow-proposal", {"package_name": "fastapi_"}),
    (
        "budget-least-that-fits-the-issue",
        {"replicas": 8, "web_workers": 8, "db_max_connections": 138},
    ),
    (
        "budget-least-with-reserved",
        {"web_workers": 10, "db_max_connections": 22, "db_reserved_connections": 2},
    ),
    ("budget-least-80-processes", {"replicas": 10, "web_workers": 8, "db_max_connections": 170}),
    (
        "budget-least-with-queue-workers",
        {"task_queue": "arq", "queue_workers": 80, "db_max_connections": 174},
    ),
    ("reserved-most", {"db_reserved_connections": 99_996, "db_max_connections": 100_000}),
    (
        "pgbouncer-max-least",
        {"db_pgbouncer": True, "db_reserved_connections": 200, "db_max_connections": 201},
    ),
    ("arq-with-workers", {"task_queue": "arq", "queue_workers": 8}),
    (
        "celery-on-rabbitmq-without-redis",
        {"task_queue": "celery", "queue_broker": "rabbitmq", "cache": "memory"},
    ),
]


def _copy(destination: Path, answers: dict[str, Any]) -> copier.Worker:
    # The working tree under test, from a plain folder copier need not clone. An answer of ...
    # leaves the question unanswered.
    data = {name: answer for name, answer in {**BASE, **answers}.items() if answer is not ...}
    return copier.run_copy(
        str(template_snapshot()),
        str(destination),
        data=data,
        defaults=True,
        unsafe=True,
        quiet=True,
    )


def test_the_table_is_large_enough() -> None:
    assert len(REFUSED) + len(_not_offered_yet()) >= 20


@pytest.mark.parametrize(
    ("answers", "question", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED + _not_offered_yet()],
)
def test_bad_answer_is_refused(
    tmp_path: Path, answers: dict[str, Any], question: str, fragment: str
) -> None:
    assert question in questions(), f"copier.yml has no question {question}"
    destination = tmp_path / "service"
    with pytest.raises(ValueError) as refusal:
        _copy(destination, answers)

    # copier's CLI prints a UserMessageError as its one-line exit message, anything else as a
    # traceback.
    assert isinstance(refusal.value, UserMessageError), repr(refusal.value)
    message = str(refusal.value)
    assert message.startswith(question), message
    assert fragment in message
    assert "\n" not in message, f"not one line: {message!r}"
    # All of it shows in the prompt's one-line toolbar of an 80-column terminal.
    assert len(message) <= 80, message
    assert not destination.exists() or not any(destination.iterdir())


@pytest.mark.parametrize("answers", [pytest.param(case[1], id=case[0]) for case in ACCEPTED])
def test_good_answer_is_accepted(tmp_path: Path, answers: dict[str, Any]) -> None:
    destination = tmp_path / "service"
    _copy(destination, answers)

    recorded = yaml.safe_load((destination / ".copier-answers.yml").read_text(encoding="utf-8"))
    for question, answer in {**BASE, **answers}.items():
        if question in recorded:
            assert recorded[question] == answer
