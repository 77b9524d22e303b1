"""The Jinja extensions: the connection budget they share with the generated service, and hooks."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment
from matrix import ROOT, questions


def _load_extensions() -> ModuleType:
    name = "keel_extensions"
    spec = importlib.util.spec_from_file_location(name, ROOT / "extensions" / "keel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


keel = _load_extensions()
budget = keel.load_budget_module()
compute_budget = budget.compute_budget
BudgetError = budget.BudgetError

# The ranges copier.yml's validators accept.
MAX_CONNECTIONS = 100_000
replicas = st.integers(1, 64)
web_workers = st.integers(1, 64)
queue_workers = st.integers(0, 256)


@st.composite
def deployments(draw: st.DrawFn, fits: bool | None = None) -> dict[str, int]:
    """compute_budget's arguments as copier.yml accepts them (reserved < max_connections).

    fits=True draws only deployments with at least two connections per process, fits=False only
    those with fewer, None any.
    """
    arguments = {
        "replicas": draw(replicas),
        "web_workers": draw(web_workers),
        "queue_workers": draw(queue_workers),
    }
    processes = arguments["replicas"] * arguments["web_workers"] + arguments["queue_workers"]
    if fits is None:
        max_connections = draw(st.integers(2, MAX_CONNECTIONS))
        reserved = draw(st.integers(0, max_connections - 1))
    else:
        least_fitting = 2 * processes
        if fits:
            reserved = draw(st.integers(0, MAX_CONNECTIONS - least_fitting))
            available = draw(st.integers(least_fitting, MAX_CONNECTIONS - reserved))
        else:
            available = draw(st.integers(1, least_fitting - 1))
            reserved = draw(st.integers(0 if available >= 2 else 1, MAX_CONNECTIONS - available))
        max_connections = available + reserved
    return {**arguments, "max_connections": max_connections, "reserved_connections": reserved}


def _budget(
    replicas: int = 1,
    web_workers: int = 2,
    queue_workers: int = 0,
    max_connections: int = 100,
    reserved_connections: int = 10,
) -> Any:
    return compute_budget(
        replicas=replicas,
        web_workers=web_workers,
        queue_workers=queue_workers,
        max_connections=max_connections,
        reserved_connections=reserved_connections,
    )


def test_sqlite_defaults_budget() -> None:
    result = _budget(max_connections=20, reserved_connections=2)
    # Each process's whole share is its pool.
    assert (result.processes, result.available, result.pool_size) == (2, 18, 9)


def test_sqlalchemy_default_would_overflow_but_budget_fits() -> None:
    # 3 replicas x 4 workers with SQLAlchemy's 5 + 10 would ask for 180 of PostgreSQL's 100.
    result = _budget(replicas=3, web_workers=4, max_connections=100, reserved_connections=10)
    assert result.processes == 12
    assert result.pool_size == 7
    assert result.processes * result.pool_size <= 90


def test_queue_workers_count_in_budget() -> None:
    result = _budget(replicas=2, web_workers=2, queue_workers=4, max_connections=50)
    assert result.processes == 8
    assert result.pool_size == 40 // 8


def test_queue_workers_are_named_only_when_there_are_some() -> None:
    with pytest.raises(BudgetError) as without:
        _budget(replicas=8, web_workers=8)
    with pytest.raises(BudgetError) as with_queue:
        _budget(replicas=8, web_workers=8, queue_workers=2)
    assert "queue_workers" not in str(without.value)
    assert "+ queue_workers 2" in str(with_queue.value)


def test_describe_is_one_line_with_the_numbers() -> None:
    line = _budget(max_connections=20, reserved_connections=2).describe()
    assert "\n" not in line
    assert "2 processes" in line
    assert "pool_size 9" in line
    assert "= 18 <= 18 available" in line


def test_budget_error_is_a_value_error() -> None:
    # copier.yml's budget_problem and pydantic validators both rely on this.
    assert issubclass(BudgetError, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", 0),
        ("web_workers", 0),
        ("queue_workers", -1),
        ("max_connections", 0),
        ("reserved_connections", -1),
    ],
)
def test_out_of_range_input_is_refused(field: str, value: int) -> None:
    arguments = {
        "replicas": 1,
        "web_workers": 1,
        "queue_workers": 0,
        "max_connections": 100,
        "reserved_connections": 0,
        field: value,
    }
    with pytest.raises(BudgetError, match=f"{field} must be at least"):
        compute_budget(**arguments)


def test_too_small_budget_message() -> None:
    with pytest.raises(BudgetError) as error:
        _budget(
            replicas=3, web_workers=4, queue_workers=2, max_connections=30, reserved_connections=10
        )
    message = str(error.value)
    assert "\n" not in message
    assert "14 processes" in message
    assert "need at least 28 connections" in message
    assert "leaves 20" in message
    assert "at most 10" in message
    assert "raise max_connections to 38" in message
    # Plain budget arithmetic, for any engine: PgBouncer is a PostgreSQL render's own advice.
    assert "PgBouncer" not in message


def _assert_within_budget(arguments: dict[str, int], result: Any) -> None:
    processes = arguments["replicas"] * arguments["web_workers"] + arguments["queue_workers"]
    available = arguments["max_connections"] - arguments["reserved_connections"]
    assert result.processes == processes
    assert result.available == available
    assert processes * result.pool_size <= available
    assert result.pool_size >= 2
    assert result.pool_size == available // processes


@given(deployments())
def test_any_accepted_answer_fits_or_is_refused(arguments: dict[str, int]) -> None:
    processes = arguments["replicas"] * arguments["web_workers"] + arguments["queue_workers"]
    available = arguments["max_connections"] - arguments["reserved_connections"]
    if available // processes < 2:
        with pytest.raises(BudgetError, match="connection budget too small"):
            compute_budget(**arguments)
    else:
        _assert_within_budget(arguments, compute_budget(**arguments))


@given(deployments(fits=True))
def test_budget_never_exceeds_available_connections(arguments: dict[str, int]) -> None:
    result = compute_budget(**arguments)
    _assert_within_budget(arguments, result)
    # The whole share is the pool: one more connection per process would break the invariant.
    assert result.processes * (result.pool_size + 1) > result.available


@given(deployments(fits=False))
def test_too_small_budget_is_refused_with_working_proposals(arguments: dict[str, int]) -> None:
    processes = arguments["replicas"] * arguments["web_workers"] + arguments["queue_workers"]
    with pytest.raises(BudgetError) as error:
        compute_budget(**arguments)

    message = str(error.value)
    assert "\n" not in message
    raised = re.search(r"raise max_connections to (\d+)", message)
    fewer = re.search(r"at most (\d+)", message)
    assert raised, message

    # The proposed max_connections really fits the same deployment.
    proposed = {**arguments, "max_connections": int(raised.group(1))}
    assert proposed["max_connections"] > arguments["max_connections"]
    _assert_within_budget(proposed, compute_budget(**proposed))

    # Fewer processes are proposed exactly when some fit, and the number is the most that fits.
    available = arguments["max_connections"] - arguments["reserved_connections"]
    if available < 2:
        assert fewer is None, message
        return
    assert fewer, message
    most_processes = int(fewer.group(1))
    assert 1 <= most_processes < processes
    fewer_processes = {
        **arguments,
        "replicas": 1,
        "web_workers": most_processes,
        "queue_workers": 0,
    }
    _assert_within_budget(fewer_processes, compute_budget(**fewer_processes))
    with pytest.raises(BudgetError):
        compute_budget(**{**fewer_processes, "web_workers": most_processes + 1})


def test_budget_problem_is_empty_when_the_deployment_fits() -> None:
    assert keel.budget_problem(1, 2, 0, 20, 2) == ""


def test_budget_problem_proposes_the_least_max_connections() -> None:
    problem = keel.budget_problem(3, 4, 0, 20, 2)
    assert problem == "db_max_connections must be at least 26: 2 reserved + 12 processes x 2"


def test_budget_problem_accepts_answers_still_given_as_strings() -> None:
    assert keel.budget_problem("1", "2", "0", "20", "2") == ""


def test_validator_global_is_registered() -> None:
    environment = Environment(extensions=[keel.KeelGlobals])
    rendered = environment.from_string("{{ budget_problem(1, 64, 0, 20, 2) }}").render()
    assert rendered.startswith("db_max_connections must be at least 130")


# ---------------------------------------------------------------- copier.yml's validator chain
def _validators() -> Environment:
    # copier.yml's own expressions, with copier's filters and keel's globals.
    return Environment(
        extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension", keel.KeelGlobals]
    )


DEPLOYMENT = ("replicas", "web_workers", "queue_workers", "db_reserved_connections")


def _refusal(question: str, answers: dict[str, Any]) -> str:
    """What copier.yml's validator for `question` says about these answers ("" = accepted)."""
    validator = questions()[question]["validator"]
    return _validators().from_string(validator).render(**answers).strip()


@st.composite
def prompted_deployments(draw: st.DrawFn) -> dict[str, Any]:
    """Answers as copier.yml accepts them up to db_max_connections, and any max_connections."""
    answers: dict[str, Any] = {
        "database": draw(st.sampled_from(["postgresql", "mysql", "sqlite"])),
        "replicas": draw(replicas),
        "web_workers": draw(web_workers),
        "queue_workers": draw(queue_workers),
    }
    if answers["database"] == "sqlite":
        answers["replicas"] = 1
    answers["db_pgbouncer"] = answers["database"] == "postgresql" and draw(st.booleans())
    answers["db_reserved_connections"] = draw(st.integers(0, 100))
    answers["db_max_connections"] = draw(
        st.one_of(st.integers(-10, 1_000), st.integers(1_000, 110_000))
    )
    for question in DEPLOYMENT:
        assert _refusal(question, answers) == "", (question, answers)
    return answers


@given(prompted_deployments())
def test_every_number_a_refusal_proposes_is_accepted(answers: dict[str, Any]) -> None:
    refusal = _refusal("db_max_connections", answers)
    if not refusal:
        if not answers["db_pgbouncer"]:
            compute_budget(
                replicas=answers["replicas"],
                web_workers=answers["web_workers"],
                queue_workers=answers["queue_workers"],
                max_connections=answers["db_max_connections"],
                reserved_connections=answers["db_reserved_connections"],
            )
        return
    assert refusal.startswith("db_max_connections must be ")
    assert "\n" not in refusal
    assert len(refusal) <= 80, refusal
    proposed = [int(number) for number in re.findall(r"at least (\d+)", refusal)]
    if not proposed:
        # Out of range: both ends of the range are accepted unless the budget needs more.
        assert "between 2 and 100000" in refusal
        return
    (least,) = proposed
    assert _refusal("db_max_connections", {**answers, "db_max_connections": least}) == ""
    # The least: one fewer is refused.
    assert _refusal("db_max_connections", {**answers, "db_max_connections": least - 1}) != ""


@given(
    replicas,
    web_workers,
    queue_workers,
    st.booleans(),
    st.integers(-5, 110_000),
)
def test_reserved_connections_leave_max_connections_room(
    replicas: int, web_workers: int, queue_workers: int, pgbouncer: bool, reserved: int
) -> None:
    answers = {
        "replicas": replicas,
        "web_workers": web_workers,
        "queue_workers": queue_workers,
        "db_pgbouncer": pgbouncer,
        "db_reserved_connections": reserved,
    }
    refusal = _refusal("db_reserved_connections", answers)
    if refusal:
        most = int(re.fullmatch(r"db_reserved_connections must be between 0 and (\d+)", refusal)[1])
        answers["db_reserved_connections"] = most
        assert _refusal("db_reserved_connections", answers) == ""
    # Whatever is accepted leaves a db_max_connections within 2..100000 that the budget accepts.
    least = answers["db_reserved_connections"] + (
        1 if pgbouncer else 2 * (replicas * web_workers + queue_workers)
    )
    assert least <= 100_000
    assert _refusal("db_max_connections", {**answers, "db_max_connections": max(least, 2)}) == ""


def _context(**answers: Any) -> dict[str, Any]:
    return {
        "_copier_phase": "render",
        "project_slug": "orders-api",
        "package_name": "orders_api",
        "python_version": "3.12",
        "database": "sqlite",
        "cache": "memory",
        "task_queue": "none",
        "metrics": "prometheus",
        "replicas": 1,
        "web_workers": 2,
        "queue_workers": 0,
        "db_max_connections": 20,
        "db_reserved_connections": 2,
        **answers,
    }


def test_context_hook_derives_values() -> None:
    context = _context()
    keel.ContextUpdater(Environment()).hook(context)
    assert context["python_target"] == "py312"
    assert context["has_database"] is True
    assert context["has_cache"] is True
    assert context["has_metrics"] is True
    assert context["has_queue"] is False
    assert context["queue_broker"] == ""
    assert context["budget"] == _budget(max_connections=20, reserved_connections=2)


def test_context_hook_gives_arq_its_only_broker() -> None:
    context = _context(task_queue="arq", cache="redis", queue_workers=2)
    keel.ContextUpdater(Environment()).hook(context)
    assert context["has_queue"] is True
    assert context["queue_broker"] == "redis"
    assert context["budget"].processes == 4
    assert context["default_database_url"] == "sqlite+aiosqlite:///./orders-api.db"


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_context_hook_keeps_the_broker_chosen_for_dramatiq(broker: str) -> None:
    context = _context(task_queue="dramatiq", queue_broker=broker, cache="redis", queue_workers=2)
    keel.ContextUpdater(Environment()).hook(context)
    assert context["has_queue"] is True
    assert context["queue_broker"] == broker


def test_context_hook_for_postgresql_through_pgbouncer_has_no_pool_budget() -> None:
    context = _context(database="postgresql", db_pgbouncer=True, db_max_connections=100)
    keel.ContextUpdater(Environment()).hook(context)
    assert context["has_pool"] is False
    assert context["budget"] is None
    assert context["database_driver"] == "postgresql+asyncpg"
    assert context["default_database_url"] == (
        "postgresql+asyncpg://postgres@127.0.0.1:6432/orders_api"
    )


def test_context_hook_without_database_has_no_budget() -> None:
    context = _context(database="none", cache="none", metrics="none")
    keel.ContextUpdater(Environment()).hook(context)
    assert context["has_database"] is False
    assert context["has_cache"] is False
    assert context["has_metrics"] is False
    assert context["budget"] is None


def test_context_hook_leaves_the_prompt_phase_alone() -> None:
    # While copier prompts, later answers are missing.
    context = {"_copier_phase": "prompt", "python_version": "3.12"}
    keel.ContextUpdater(Environment()).hook(context)
    assert context == {"_copier_phase": "prompt", "python_version": "3.12"}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_context_hook_keeps_the_broker_chosen_for_celery(broker: str) -> None:
    context = _context(task_queue="celery", queue_broker=broker, cache="redis", queue_workers=3)
    keel.ContextUpdater(Environment()).hook(context)
    assert context["has_queue"] is True
    assert context["queue_broker"] == broker
    assert context["budget"].processes == 2 + 3  # one replica of 2 web workers, 3 queue workers
