"""Bad answers are refused before anything is written, in one line naming question and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from matrix import ROOT, choice_values, questions

BASE = {"project_name": "Keel Probe"}

# (id, answers on top of BASE, question the message names, fragment of the rule).
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-digit-first", {"project_name": "1st Service"}, "project_name", "start with a letter"),
    ("name-empty", {"project_name": ""}, "project_name", "start with a letter"),
    ("name-slash", {"project_name": "Orders/API"}, "project_name", "letters, digits, spaces"),
    ("name-too-long", {"project_name": "A" * 65}, "project_name", "at most 64"),
    ("slug-underscore", {"project_slug": "keel_probe"}, "project_slug", "single dashes"),
    ("slug-uppercase", {"project_slug": "Keel-Probe"}, "project_slug", "lowercase"),
    ("slug-double-dash", {"project_slug": "keel--probe"}, "project_slug", "single dashes"),
    ("slug-leading-dash", {"project_slug": "-keel"}, "project_slug", "starting with a letter"),
    ("package-dash", {"package_name": "keel-probe"}, "package_name", "Python identifier"),
    ("package-uppercase", {"package_name": "Keel"}, "package_name", "lowercase Python identifier"),
    ("package-digit-first", {"package_name": "1keel"}, "package_name", "Python identifier"),
    ("package-too-long", {"package_name": "k" * 49}, "package_name", "at most 48"),
    ("package-keyword", {"package_name": "class"}, "package_name", "Python keyword"),
    ("package-soft-keyword", {"package_name": "async"}, "package_name", "Python keyword"),
    ("package-shadows-fastapi", {"package_name": "fastapi"}, "package_name", "shadow"),
    ("package-shadows-tests", {"package_name": "tests"}, "package_name", "shadow"),
    ("name-derives-keyword", {"project_name": "Class"}, "package_name", "Python keyword"),
    ("name-derives-shadow", {"project_name": "SQLAlchemy"}, "package_name", "shadow"),
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
        "uses the project's Redis",
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
    (
        "reserved-negative",
        {"db_reserved_connections": -1},
        "db_reserved_connections",
        "at least 0",
    ),
    (
        "reserved-equals-max",
        {"db_max_connections": 20, "db_reserved_connections": 20},
        "db_reserved_connections",
        "less than db_max_connections (20)",
    ),
    (
        "budget-too-small-for-max-connections",
        {"web_workers": 16, "db_max_connections": 20},
        "db_max_connections",
        "connection budget too small",
    ),
    (
        "budget-too-small-after-reserved",
        {"web_workers": 10, "db_max_connections": 20, "db_reserved_connections": 2},
        "db_reserved_connections",
        "connection budget too small",
    ),
    (
        "budget-postgresql-80-processes",
        {"database": "postgresql", "replicas": 10, "web_workers": 8},
        "db_max_connections",
        "lower the process count to at most 50",
    ),
    (
        "arq-without-redis",
        {"task_queue": "arq", "cache": "memory"},
        "task_queue",
        "keeps its jobs in the project's Redis: choose cache=redis",
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
        "connection budget too small",
    ),
    ("db-cores-zero", {"db_cpu_cores": 0}, "db_cpu_cores", "between 1 and 256"),
    ("db-cores-too-many", {"db_cpu_cores": 257}, "db_cpu_cores", "between 1 and 256"),
    (
        "celery-on-redis-without-redis",
        {"task_queue": "celery", "queue_broker": "redis", "cache": "memory"},
        "queue_broker",
        "uses the project's Redis",
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
    ("arq-with-workers", {"task_queue": "arq", "queue_workers": 8}),
    (
        "celery-on-rabbitmq-without-redis",
        {"task_queue": "celery", "queue_broker": "rabbitmq", "cache": "memory"},
    ),
]


def _copy(destination: Path, answers: dict[str, Any]) -> copier.Worker:
    # vcs_ref HEAD: the working tree under test, not the newest release tag.
    return copier.run_copy(
        str(ROOT),
        str(destination),
        data={**BASE, **answers},
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref="HEAD",
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

    message = str(refusal.value)
    assert f"'{question}'" in message
    assert fragment in message
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert not destination.exists() or not any(destination.iterdir())


@pytest.mark.parametrize("answers", [pytest.param(case[1], id=case[0]) for case in ACCEPTED])
def test_good_answer_is_accepted(tmp_path: Path, answers: dict[str, Any]) -> None:
    destination = tmp_path / "service"
    _copy(destination, answers)

    recorded = yaml.safe_load((destination / ".copier-answers.yml").read_text(encoding="utf-8"))
    for question, answer in {**BASE, **answers}.items():
        if question in recorded:
            assert recorded[question] == answer
