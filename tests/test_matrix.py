"""The matrix builder: combinations, ids and the smoke subset come from copier.yml's choices."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import matrix
import pytest
import yaml

if TYPE_CHECKING:
    from conftest import Render

# The questions DESIGN.md plans, with the shapes copier.yml may give them: a `when` on the broker
# and a per-choice validator that disables arq without a Redis server.
PLANNED = """\
_subdirectory: template
project_name:
  type: str
database:
  type: str
  default: postgresql
  choices:
    PostgreSQL: postgresql
    MySQL: mysql
    SQLite: sqlite
    None: none
cache:
  type: str
  default: redis
  choices:
    Redis: redis
    Memory: memory
    None: none
task_queue:
  type: str
  default: none
  choices:
    None: none
    arq:
      value: arq
      validator: "{% if cache != 'redis' %}arq needs Redis: choose cache=redis{% endif %}"
    Celery: celery
    Dramatiq: dramatiq
queue_broker:
  type: str
  default: redis
  when: "{{ task_queue in ['celery', 'dramatiq'] }}"
  choices:
    Redis: redis
    RabbitMQ: rabbitmq
metrics:
  type: str
  default: prometheus
  choices: [prometheus, none]
"""


def _clear_caches() -> None:
    for cached in (
        matrix.questions,
        matrix.full_matrix,
        matrix.smoke_matrix,
        matrix.heavy_matrix,
    ):
        cached.cache_clear()


@pytest.fixture
def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    copier_yml = tmp_path / "copier.yml"
    copier_yml.write_text(PLANNED, encoding="utf-8")
    monkeypatch.setattr(matrix, "COPIER_YML", copier_yml)
    _clear_caches()
    yield
    _clear_caches()


@pytest.mark.usefixtures("planned")
def test_planned_matrix_expands_brokers_and_drops_disabled_choices() -> None:
    ids = [combo.id for combo in matrix.full_matrix()]
    # 4 databases x 2 metrics x (3 caches x (none + celery:2 + dramatiq:2) + arq with redis only)
    assert len(ids) == 4 * 2 * (3 * 5 + 1)
    assert len(set(ids)) == len(ids)
    assert ids[0] == "postgresql-redis-none-prometheus"
    assert "postgresql-redis-celery:rabbitmq-prometheus" in ids
    assert "mysql-memory-dramatiq:redis-none" in ids
    assert "sqlite-redis-arq-none" in ids
    assert not any("arq:" in combo_id for combo_id in ids)
    assert not any(combo_id.startswith("none-memory-arq") for combo_id in ids)


@pytest.mark.usefixtures("planned")
def test_planned_combination_answers_and_services() -> None:
    combo = next(c for c in matrix.full_matrix() if c.id == "mysql-redis-celery:rabbitmq-none")
    assert combo.data() == {
        **matrix.BASE_ANSWERS,
        "database": "mysql",
        "cache": "redis",
        "task_queue": "celery",
        "queue_broker": "rabbitmq",
        "metrics": "none",
    }
    assert combo.services() == [("MariaDB", 3306), ("RabbitMQ", 5672), ("Redis", 6379)]
    arq = next(c for c in matrix.full_matrix() if c.id == "none-redis-arq-prometheus")
    assert "queue_broker" not in arq.data()


@pytest.mark.usefixtures("planned")
def test_planned_smoke_subset_covers_every_choice_with_few_combinations() -> None:
    smoke = matrix.smoke_matrix()
    used = set().union(*(combo.choices() for combo in smoke))
    every = set().union(*(combo.choices() for combo in matrix.full_matrix()))
    assert used == every
    assert smoke[0] == matrix.default_combo()
    # database and task_queue have 4 choices each, and 4 combinations can cover everything.
    assert len(smoke) == 4


@pytest.mark.usefixtures("planned")
def test_planned_heavy_subset_meets_every_pair_of_answers() -> None:
    every = [matrix.facets(combo) for combo in matrix.full_matrix()]
    heavy = matrix.heavy_matrix()
    chosen = [matrix.facets(combo) for combo in heavy]
    axes = len(matrix.AXES)
    for first in range(axes):
        for second in range(first + 1, axes):
            offered = {(answers[first], answers[second]) for answers in every}
            met = {(answers[first], answers[second]) for answers in chosen}
            assert met == offered, (matrix.AXES[first], matrix.AXES[second])
    # 4 databases x 5 task queues bound it from below; far fewer than the 128 combinations.
    assert 20 <= len(heavy) <= 30
    assert len(set(heavy)) == len(heavy)


def test_current_heavy_subset_meets_database_and_queue_pairs() -> None:
    heavy = {matrix.facets(combo)[::2] for combo in matrix.heavy_matrix()}
    every = {matrix.facets(combo)[::2] for combo in matrix.full_matrix()}
    assert heavy == every
    assert matrix.heavy_matrix()[0] == matrix.default_combo()


def test_current_matrix_is_built_from_copier_yml() -> None:
    combos = matrix.full_matrix()
    for question in ("database", "cache", "metrics"):
        offered = {value for value, _ in matrix.choice_values(question)}
        assert {dict(combo.answers)[question] for combo in combos} == offered
    assert combos[0] == matrix.default_combo()
    # copier.yml's task_queue validator: a queue's tasks need a database.
    assert not any(
        dict(combo.answers)["database"] == "none" and dict(combo.answers)["task_queue"] != "none"
        for combo in combos
    )
    smoke = matrix.smoke_matrix()
    assert set().union(*(c.choices() for c in smoke)) == set().union(*(c.choices() for c in combos))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_unreachable_service_skips_or_fails(
    monkeypatch: pytest.MonkeyPatch,
    require_services: Callable[[matrix.Combo], None],
    required: str,
    outcome: type[BaseException],
) -> None:
    monkeypatch.setitem(matrix.SERVICES, ("database", "probe"), ("Probe", _closed_port()))
    monkeypatch.setenv("KEEL_REQUIRE_SERVICES", required)
    combo = matrix.Combo(answers=(("database", "probe"),), id="probe")
    with pytest.raises(outcome, match=r"probe needs Probe on 127\.0\.0\.1:\d+"):
        require_services(combo)


def test_reachable_service_is_required_quietly(
    monkeypatch: pytest.MonkeyPatch, require_services: Callable[[matrix.Combo], None]
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        monkeypatch.setitem(matrix.SERVICES, ("database", "probe"), ("Probe", port))
        monkeypatch.setenv("KEEL_REQUIRE_SERVICES", "1")
        require_services(matrix.Combo(answers=(("database", "probe"),), id="probe"))


def test_deployment_variants_cover_every_engine_and_a_queue_on_each() -> None:
    variants = matrix.deployment_variants()
    ids = [variant.id for variant in variants]
    assert len(set(ids)) == len(ids)
    matrix_ids = {combo.id for combo in matrix.full_matrix()}
    for variant_id in ids:
        combo_id, size = variant_id.split("@")
        assert combo_id in matrix_ids
        assert re.fullmatch(r"r\d+w\d+(q\d+)?(-tight)?", size), size
    answers = [dict(variant.answers) for variant in variants]
    engines = {(a["database"], a.get("db_pgbouncer", False)) for a in answers}
    assert engines == {
        ("postgresql", False),
        ("postgresql", True),
        ("mysql", False),
        ("sqlite", False),
        ("none", False),
    }
    assert all(a["task_queue"] != "none" for a in answers if a["database"] != "none")
    queues = {a["task_queue"] for a in answers}
    assert queues >= {"arq", "celery", "dramatiq"}
    assert {a.get("queue_broker") for a in answers if a["task_queue"] == "celery"} == {
        "redis",
        "rabbitmq",
    }
    assert any(a["replicas"] > 1 for a in answers)
    assert all(a["web_workers"] != 2 for a in answers)
    assert any(a.get("queue_workers", 0) > 0 for a in answers)


def test_a_tight_variant_leaves_each_process_exactly_its_minimum() -> None:
    tight = [v for v in matrix.deployment_variants() if v.id.endswith("-tight")]
    assert {dict(v.answers)["database"] for v in tight} == {"postgresql", "mysql", "sqlite"}
    for variant in tight:
        answers = dict(variant.answers)
        processes = answers["replicas"] * answers["web_workers"] + answers["queue_workers"]
        spare = answers["db_max_connections"] - answers["db_reserved_connections"]
        assert spare == processes * matrix.MIN_CONNECTIONS_PER_PROCESS, variant.id


@pytest.mark.parametrize("variant", matrix.deployment_variants(), ids=lambda variant: variant.id)
def test_copier_accepts_each_variant_and_refuses_one_connection_fewer(
    render: Render, variant: matrix.Combo
) -> None:
    answers = dict(variant.answers)
    project = render(variant.data())
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    sizes = ("replicas", "web_workers", "queue_workers", "db_max_connections")
    assert {name: recorded[name] for name in sizes if name in answers} == {
        name: answers[name] for name in sizes if name in answers
    }
    if variant.id.endswith("-tight"):
        fewer = variant.data(db_max_connections=answers["db_max_connections"] - 1)
        with pytest.raises(pytest.fail.Exception, match="db_max_connections must be at least"):
            render(fewer)
