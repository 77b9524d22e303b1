"""The matrix of answers the template's tests render, built from copier.yml's own choices.

Each axis is one concern of the generated service; its first question is always part of a
combination, the questions after it (a task queue's broker) only where their `when` holds for
that combination. A choice that copier.yml refuses for a combination (a per-choice `validator`, or
the question's own) is left out, so the matrix grows by itself as copier.yml offers more choices.

Ids read like the answers: `sqlite-memory-none-prometheus`, `postgresql-redis-celery:rabbitmq-none`.
The smoke subset is the smallest set of combinations, the default one included, that together
use every choice at least once.

Deployment-size variants render a few combinations at sizes other than the defaults, which every
combination of the matrix keeps (one replica, two web workers, no budget near its edge). Their ids
add the size: `postgresql-redis-celery:redis-prometheus@r2w4q3-tight` is 2 replicas of 4 web
workers and 3 queue workers, on a max_connections that leaves each process exactly its minimum of
2 connections. Five variants, chosen so that together they run every database engine (PgBouncer
too), a task queue on each engine that can have one (arq, Celery on Redis and on RabbitMQ,
Dramatiq), more than one replica, web_workers of 1, 3, 4, 5 and 8 rather than 2, queue workers of
their own count, and the tight budget on PostgreSQL, MySQL and SQLite; each adds one install and
one test run of 30 to 100 s, so the five add about three minutes to a run on two workers:

- postgresql-redis-celery:redis-prometheus@r2w4q3-tight: the issue's case (replicas 2, web_workers
  4), with Celery's prefork processes each on a pool of 2 connections.
- postgresql:pgbouncer-memory-dramatiq:rabbitmq-none@r6w8q2: PgBouncer, at 50 processes that the
  default max_connections of 100 could not hold without it: the budget is PgBouncer's.
- mysql-redis-arq-none@r3w1q2-tight: one web worker per replica, arq, the tight budget on MySQL.
- sqlite-none-celery:rabbitmq-prometheus@r1w3q2-tight: SQLite, which allows one replica only, with
  Celery on RabbitMQ and a tight budget on a small pool.
- none-redis-none-prometheus@r4w5: no database, so no budget; sizes still set WEB_CONCURRENCY and
  REPLICAS, which the service and its tests must not take from anywhere but the settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment

ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = ROOT / "copier.yml"

# Concerns in id order; a question copier.yml does not ask (yet) is skipped.
AXES: tuple[tuple[str, ...], ...] = (
    ("database", "db_pgbouncer"),
    ("cache",),
    ("task_queue", "queue_broker"),
    ("metrics",),
)

# Every render answers these; 3.11 is the interpreter every machine running the suite has.
BASE_ANSWERS: dict[str, Any] = {"project_name": "Keel Probe", "python_version": "3.11"}

# The fewest connections each process may have, as the template's infra/budget.py says.
MIN_CONNECTIONS_PER_PROCESS = 2

# Local servers a choice needs: (question, choice) -> (service name, port on 127.0.0.1).
SERVICES: dict[tuple[str, str], tuple[str, int]] = {
    ("database", "postgresql"): ("PostgreSQL", 5432),
    ("database", "mysql"): ("MariaDB", 3306),
    ("cache", "redis"): ("Redis", 6379),
    ("task_queue", "arq"): ("Redis", 6379),
    ("queue_broker", "redis"): ("Redis", 6379),
    ("queue_broker", "rabbitmq"): ("RabbitMQ", 5672),
}

_FALSE_WORDS = {"", "false", "no", "off", "n", "none", "null", "~"}


@dataclass(frozen=True)
class Combo:
    """One combination of answers to the matrix questions."""

    answers: tuple[tuple[str, Any], ...]
    id: str

    def data(self, **overrides: Any) -> dict[str, Any]:
        """The answers to render this combination with."""
        return {**BASE_ANSWERS, **dict(self.answers), **overrides}

    def choices(self) -> set[tuple[str, Any]]:
        """The (question, choice) pairs this combination uses."""
        return set(self.answers)

    def services(self) -> list[tuple[str, int]]:
        """Local servers this combination's generated service talks to, without duplicates."""
        needed = {SERVICES[pair] for pair in self.answers if pair in SERVICES}
        return sorted(needed, key=lambda service: service[1])


@cache
def questions() -> dict[str, dict[str, Any]]:
    """copier.yml's questions (keys not starting with an underscore), in file order."""
    config: dict[str, Any] = {}
    for document in yaml.safe_load_all(COPIER_YML.read_text(encoding="utf-8")):
        config.update(document or {})
    return {
        name: spec if isinstance(spec, dict) else {"default": spec}
        for name, spec in config.items()
        if not name.startswith("_")
    }


def _jinja() -> Environment:
    # copier.yml expressions use filters (regex_search, ...) from copier's default extension.
    return Environment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    try:
        return float(text) != 0
    except ValueError:
        return text not in _FALSE_WORDS


def _render(expression: Any, context: Mapping[str, Any]) -> Any:
    if not isinstance(expression, str):
        return expression
    return _jinja().from_string(expression).render(**context)


def choice_values(name: str) -> list[tuple[Any, str]]:
    """Each choice of a question as (value, per-choice validator or "")."""
    spec = questions()[name]
    if spec.get("type") == "bool" and "choices" not in spec:
        return [(False, ""), (True, "")]
    raw = spec.get("choices", [])
    items = raw.values() if isinstance(raw, dict) else raw
    values: list[tuple[Any, str]] = []
    for item in items:
        if isinstance(item, dict):
            values.append((item["value"], item.get("validator", "")))
        elif isinstance(item, list | tuple):
            values.append((item[1], ""))
        else:
            values.append((item, ""))
    return values


def is_asked(name: str, context: Mapping[str, Any]) -> bool:
    """Whether copier asks this question, given the answers so far."""
    return _truthy(_render(questions()[name].get("when", True), context))


def default(name: str, context: Mapping[str, Any]) -> Any:
    """The question's default, rendered with the answers so far."""
    return _render(questions()[name].get("default"), context)


def _offered(name: str, context: Mapping[str, Any]) -> list[Any]:
    # A choice is out when its own validator or the question's refuses it, given the answers so far.
    question_validator = questions()[name].get("validator", "")
    return [
        value
        for value, validator in choice_values(name)
        if not any(
            str(_render(check, {**context, name: value})).strip()
            for check in (validator, question_validator)
        )
    ]


def _expand(axis: tuple[str, ...], context: dict[str, Any]) -> Iterator[list[tuple[str, Any]]]:
    """The possible answers to one axis, given the answers to the axes before it."""
    partials: list[list[tuple[str, Any]]] = [[]]
    for position, name in enumerate(axis):
        if name not in questions():
            continue
        grown = []
        for answers in partials:
            known = {**context, **dict(answers)}
            if is_asked(name, known):
                grown += [[*answers, (name, value)] for value in _offered(name, known)]
            elif position == 0:
                # Not asked but still answered, by its default: part of every id.
                grown.append([*answers, (name, default(name, known))])
            else:
                grown.append(answers)
        partials = grown
    yield from partials


def _axis_id(axis: tuple[str, ...], answers: Mapping[str, Any]) -> str:
    parts = []
    for name in axis:
        if name not in answers:
            continue
        value = answers[name]
        if isinstance(value, bool):
            # A yes/no option reads as its name when on (db_pgbouncer -> pgbouncer), else nothing.
            if value:
                parts.append(name.removeprefix("db_"))
        else:
            parts.append(str(value))
    return ":".join(parts)


@cache
def full_matrix() -> tuple[Combo, ...]:
    """Every combination copier.yml accepts, the default one first."""
    combos: list[list[tuple[str, Any]]] = [[]]
    for axis in AXES:
        combos = [
            answers + tail
            for answers in combos
            for tail in _expand(axis, {**BASE_ANSWERS, **dict(answers)})
        ]
    result = []
    for answers in combos:
        by_name = dict(answers)
        combo_id = "-".join(part for part in (_axis_id(axis, by_name) for axis in AXES) if part)
        result.append(Combo(answers=tuple(answers), id=combo_id))
    first = default_combo_of(result)
    return (first, *(combo for combo in result if combo != first))


def default_combo_of(combos: list[Combo]) -> Combo:
    """The combination copier renders when only the base answers are given."""
    context: dict[str, Any] = dict(BASE_ANSWERS)
    for name in questions():
        if name not in context:
            context[name] = default(name, context)
    for combo in combos:
        if all(str(context.get(name)) == str(value) for name, value in combo.answers):
            return combo
    return combos[0]


def default_combo() -> Combo:
    """The combination copier renders when only the base answers are given."""
    return full_matrix()[0]


@cache
def smoke_matrix() -> tuple[Combo, ...]:
    """The fewest combinations, the default one among them, that use every choice at least once."""
    combos = full_matrix()
    first = combos[0]
    uncovered = set().union(*(combo.choices() for combo in combos)) - first.choices()
    for size in range(len(combos)):
        cover = _cover(uncovered, combos[1:], size)
        if cover is not None:
            return (first, *cover)
    raise AssertionError("unreachable: the whole matrix covers every choice")


def _cover(
    uncovered: set[tuple[str, Any]], candidates: tuple[Combo, ...], size: int
) -> list[Combo] | None:
    """At most `size` candidates that together use every uncovered choice, or None."""
    if not uncovered:
        return []
    # A combination answers each question once, so a question with more unused choices than
    # combinations left cannot be covered.
    per_question: dict[str, int] = {}
    for question, _ in uncovered:
        per_question[question] = per_question.get(question, 0) + 1
    if max(per_question.values()) > size:
        return None
    # Branch on the choice the fewest candidates use; try the most useful candidates first.
    # Sorted first: ties must break the same way in every pytest-xdist worker, whose string
    # hashes (and so set orders) differ, or the workers collect different smoke sets.
    rarest = min(
        sorted(uncovered, key=repr), key=lambda pair: sum(pair in c.choices() for c in candidates)
    )
    using = [combo for combo in candidates if rarest in combo.choices()]
    using.sort(key=lambda combo: len(combo.choices() & uncovered), reverse=True)
    for combo in using:
        rest = _cover(uncovered - combo.choices(), candidates, size - 1)
        if rest is not None:
            return [combo, *rest]
    return None


def python_versions() -> list[str]:
    """The python_version choices copier.yml offers."""
    return [str(value) for value, _ in choice_values("python_version")]


@dataclass(frozen=True)
class DeploymentSize:
    """Answers to the deployment-size questions, other than their defaults."""

    replicas: int
    web_workers: int
    queue_workers: int = 0
    # db_max_connections leaves every process exactly MIN_CONNECTIONS_PER_PROCESS: one fewer
    # connection and copier refuses the answers.
    is_tight: bool = False

    @property
    def id(self) -> str:
        """`r2w4q3-tight`: replicas, web workers, queue workers (when any), and a tight budget."""
        size = f"r{self.replicas}w{self.web_workers}"
        if self.queue_workers:
            size += f"q{self.queue_workers}"
        return f"{size}-tight" if self.is_tight else size

    def answers(self, combo: Combo) -> dict[str, Any]:
        """The answers that give combo this size."""
        answers: dict[str, Any] = {"replicas": self.replicas, "web_workers": self.web_workers}
        context = combo.data(**answers)
        if is_asked("queue_workers", context):
            answers["queue_workers"] = self.queue_workers
        elif self.queue_workers:
            raise ValueError(f"{combo.id} has no task queue for {self.queue_workers} queue workers")
        if self.is_tight:
            if not is_asked("db_max_connections", context):
                raise ValueError(f"{combo.id} has no connection budget to make tight")
            reserved = int(default("db_reserved_connections", context))
            processes = self.replicas * self.web_workers + self.queue_workers
            answers["db_reserved_connections"] = reserved
            answers["db_max_connections"] = reserved + processes * MIN_CONNECTIONS_PER_PROCESS
        return answers


# (matrix id, size): see the module docstring for why these five.
VARIANTS: tuple[tuple[str, DeploymentSize], ...] = (
    (
        "postgresql-redis-celery:redis-prometheus",
        DeploymentSize(replicas=2, web_workers=4, queue_workers=3, is_tight=True),
    ),
    (
        "postgresql:pgbouncer-memory-dramatiq:rabbitmq-none",
        DeploymentSize(replicas=6, web_workers=8, queue_workers=2),
    ),
    (
        "mysql-redis-arq-none",
        DeploymentSize(replicas=3, web_workers=1, queue_workers=2, is_tight=True),
    ),
    (
        "sqlite-none-celery:rabbitmq-prometheus",
        DeploymentSize(replicas=1, web_workers=3, queue_workers=2, is_tight=True),
    ),
    ("none-redis-none-prometheus", DeploymentSize(replicas=4, web_workers=5)),
)


@cache
def deployment_variants() -> tuple[Combo, ...]:
    """The VARIANTS as combinations: matrix answers and size answers, ids `<matrix id>@<size>`."""
    by_id = {combo.id: combo for combo in full_matrix()}
    variants = []
    for combo_id, size in VARIANTS:
        if combo_id not in by_id:
            raise ValueError(
                f"deployment variant {combo_id!r} is not a combination copier.yml accepts"
            )
        combo = by_id[combo_id]
        answers = (*combo.answers, *size.answers(combo).items())
        variants.append(Combo(answers=answers, id=f"{combo.id}@{size.id}"))
    return tuple(variants)


def facets(combo: Combo) -> tuple[str, ...]:
    """The combination's answer to each axis, as its id spells it: ("postgresql:pgbouncer",
    "redis", "celery:rabbitmq", "prometheus")."""
    answers = dict(combo.answers)
    return tuple(_axis_id(axis, answers) for axis in AXES)


def _pairs(combo: Combo) -> set[tuple[int, str, int, str]]:
    answers = facets(combo)
    return {
        (first, answers[first], second, answers[second])
        for first in range(len(answers))
        for second in range(first + 1, len(answers))
    }


@cache
def heavy_matrix() -> tuple[Combo, ...]:
    """Combinations whose generated suites run their slow tests too: together they answer every
    two axes in every way the matrix does (database and task queue, queue and metrics, ...).

    The slow tests start, kill and restart real processes (gunicorn under load, queue workers
    killed mid-task, a private PostgreSQL restarted, a broker cut off). What they exercise
    depends on one or two answers, so a set that meets every pair of answers runs each of their
    code paths; the rest of the matrix runs every other test. Greedy, in matrix order: the same
    set in every pytest-xdist worker.
    """
    combos = full_matrix()
    uncovered = set().union(*(_pairs(combo) for combo in combos))
    chosen: list[Combo] = []
    while uncovered:
        best = max(combos, key=lambda combo: len(_pairs(combo) & uncovered))
        chosen.append(best)
        uncovered -= _pairs(best)
    return tuple(combo for combo in combos if combo in chosen)
