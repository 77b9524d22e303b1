"""Jinja extensions for keel: derived values for the templates and checks for copier.yml."""

from __future__ import annotations

import hashlib
import keyword
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from copier.errors import UserMessageError
from copier_template_extensions import ContextHook
from jinja2 import Environment
from jinja2.ext import Extension

BUDGET_MODULE = (
    Path(__file__).parent.parent
    / "template/src/{{ package_name }}/infra/{% if has_pool %}budget.py{% endif %}"
)


def load_budget_module() -> ModuleType:
    """Load the generated service's budget module: render time and run time share one formula."""
    source = BUDGET_MODULE.read_text(encoding="utf-8")
    # Named after its source: `copier update` renders an older release's template in the same
    # process, whose extension loads its own, different budget module.
    name = "keel_budget_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    # Compiled from source rather than imported: an import would write __pycache__/ into the
    # template folder, and from there into every render.
    module = ModuleType(name)
    module.__file__ = str(BUDGET_MODULE)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    exec(compile(source, BUDGET_MODULE, "exec"), module.__dict__)
    return module


DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "sqlite": "sqlite+aiosqlite",
}


def default_database_url(context: dict[str, Any]) -> str:
    """The DATABASE_URL a fresh checkout uses: the local server, or a file next to the code."""
    database = context["database"]
    if database == "postgresql":
        port = 6432 if context["db_pgbouncer"] else 5432
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{context['package_name']}"
    if database == "mysql":
        return f"mysql+asyncmy://root@127.0.0.1:3306/{context['package_name']}"
    if database == "sqlite":
        return f"sqlite+aiosqlite:///./{context['project_slug']}.db"
    return ""


def budget_problem(
    replicas: Any,
    web_workers: Any,
    queue_workers: Any,
    max_connections: Any,
    reserved_connections: Any,
) -> str:
    """db_max_connections's refusal as the prompt shows it, or "" when the deployment fits.

    The least max_connections that fits is proposed: the user is answering that question now, and
    every answer it depends on (the process counts, the reserved connections) is already known.
    """
    budget = load_budget_module()
    processes = int(replicas) * int(web_workers) + int(queue_workers)
    reserved = int(reserved_connections)
    try:
        budget.compute_budget(
            replicas=int(replicas),
            web_workers=int(web_workers),
            queue_workers=int(queue_workers),
            max_connections=int(max_connections),
            reserved_connections=reserved,
        )
    except budget.BudgetError:
        least = reserved + processes * budget.MIN_CONNECTIONS_PER_PROCESS
        return (
            f"db_max_connections must be at least {least}: {reserved} reserved"
            f" + {processes} processes x {budget.MIN_CONNECTIONS_PER_PROCESS}"
        )
    return ""


def worker_pods(task_queue: str, queue_workers: int, web_workers: int) -> tuple[int, int]:
    """Kubernetes worker pods and processes per pod that add up to exactly queue_workers.

    arq runs one process per pod. Celery and Dramatiq run as many processes per pod as a web pod
    has workers, or the largest count below that which divides queue_workers, so that every pod
    is alike and the processes add up to the budget's QUEUE_WORKERS, no more and no fewer.
    """
    if task_queue == "none" or queue_workers < 1:
        return 0, 0
    if task_queue == "arq":
        return queue_workers, 1
    per_pod = max(
        size for size in range(1, min(web_workers, queue_workers) + 1) if queue_workers % size == 0
    )
    return queue_workers // per_pod, per_pod


def kubernetes_secrets(context: dict[str, Any]) -> list[str]:
    """The settings a Kubernetes deployment reads from its Secret: every URL that may hold a
    password (a SQLite file's path holds none)."""
    names = []
    if context["database"] in ("postgresql", "mysql"):
        names.append("DATABASE_URL")
    if context["cache"] == "redis":
        names.append("REDIS_URL")
    if context.get("queue_broker") == "rabbitmq":
        names.append("RABBITMQ_URL")
    return names


# Names a generated package may not take: Python keywords, and the modules the service imports.
SHADOWED_MODULES = (
    "tests",
    "migrations",
    "fastapi",
    "starlette",
    "pydantic",
    "sqlalchemy",
    "alembic",
    "asyncio",
    "typing",
    "logging",
    "json",
    "http",
    "test",
    "site",
    "gunicorn",
    "uvicorn",
    "prometheus_client",
    "redis",
    "celery",
    "arq",
    "dramatiq",
)


class KeelGlobals(Extension):
    """Functions and names that copier.yml's validators and defaults use."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["budget_problem"] = budget_problem
        environment.globals["python_keywords"] = list(keyword.kwlist)
        environment.globals["shadowed_modules"] = list(SHADOWED_MODULES)
        refuse_answers_in_one_line()


# ---------------------------------------------------------------- one-line refusals
# copier raises a plain ValueError for an answer its validator refuses when the answer comes from
# --data, --data-file or --defaults, and its CLI prints that as a traceback; at the prompt it says
# only "Invalid input" for a non-number, and prefixes every message with "Validation error for
# question '...': ", which leaves a 23-column message visible in an 80-column terminal's one-line
# toolbar. These wrappers give every refusal as the validator's own line, which names the question
# first, raised as a UserMessageError: copier's CLI prints it and exits 1, and callers catching
# ValueError still do.


class RefusedAnswer(UserMessageError, ValueError):
    """An answer copier.yml refuses, as one line that starts with the question's name."""

    def __init__(self, question: str, problem: str) -> None:
        self.question = question
        problem = " ".join(problem.split())
        super().__init__(problem if problem.startswith(question) else f"{question}: {problem}")


ANSWER_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "yes or no",
    "json": "JSON",
    "yaml": "YAML",
}
SHOWN_ANSWER_LENGTH = 20


def _unparsable(question: Any, answer: Any, error: Exception) -> RefusedAnswer:
    """The refusal of an answer that is not of the question's type, or not one of its choices."""
    name = question.var_name
    problem = str(error)
    if problem.startswith(f"Invalid choice for '{name}': "):
        return RefusedAnswer(name, problem.split(": ", 1)[1])
    shown = str(answer)
    if len(shown) > SHOWN_ANSWER_LENGTH:
        shown = shown[:SHOWN_ANSWER_LENGTH] + "..."
    kind = ANSWER_KINDS.get(str(question.type), f"of type {question.type}")
    return RefusedAnswer(name, f"{name} must be {kind}, got {shown!r}")


def refuse_answers_in_one_line() -> None:
    """Wrap copier's Question so that every bad answer is refused in one line."""
    try:
        from copier import _user_data
    except ImportError:  # an older copier keeps its own messages
        return
    question_class = getattr(_user_data, "Question", None)
    methods = ("parse_answer", "validate_answer", "get_questionary_structure")
    if (
        question_class is None
        or not all(hasattr(question_class, method) for method in methods)
        or getattr(question_class, "_keel_refuses_in_one_line", False)
    ):
        return
    parse_answer = question_class.parse_answer
    validate_answer = question_class.validate_answer
    get_questionary_structure = question_class.get_questionary_structure

    def parse(self: Any, answer: Any) -> Any:
        try:
            return parse_answer(self, answer)
        except RefusedAnswer:
            raise
        except (TypeError, ValueError) as error:
            raise _unparsable(self, answer, error) from error

    def validate(self: Any, answer: Any) -> None:
        try:
            validate_answer(self, answer)
        except RefusedAnswer:
            raise
        except ValueError as error:
            prefix = f"Validation error for question '{self.var_name}': "
            raise RefusedAnswer(self.var_name, str(error).removeprefix(prefix)) from error

    def structure(self: Any) -> Any:
        result = get_questionary_structure(self)
        if "validate" in result:

            def verdict(typed: str) -> str | bool:
                # What the prompt shows under the answer: the refusal, one line, or nothing.
                try:
                    self.validate_answer(self.parse_answer(typed))
                except Exception as error:  # any failure is shown, never raised
                    return " ".join(str(error).split())
                return True

            result["validate"] = verdict
        return result

    question_class.parse_answer = parse
    question_class.validate_answer = validate
    question_class.get_questionary_structure = structure
    question_class._keel_refuses_in_one_line = True


class ContextUpdater(ContextHook):
    """Values derived from the answers, never asked and never recorded."""

    def hook(self, context: dict[str, Any]) -> None:
        # While copier prompts, later answers are missing and earlier ones may still be strings;
        # a migration's command is rendered before the answers are loaded and needs none of this.
        if context.get("_copier_phase") in ("prompt", "migrate"):
            return
        context["python_target"] = "py" + str(context["python_version"]).replace(".", "")
        context["has_database"] = context["database"] != "none"
        context["has_cache"] = context["cache"] != "none"
        context["has_metrics"] = context["metrics"] == "prometheus"
        context["has_queue"] = context["task_queue"] != "none"
        # arq is Redis-only, so its broker is never asked; without a queue there is none.
        context["queue_broker"] = {"none": "", "arq": "redis"}.get(
            context["task_queue"], context.get("queue_broker", "")
        )
        context["db_pgbouncer"] = bool(context.get("db_pgbouncer", False))
        context["has_pool"] = context["has_database"] and not context["db_pgbouncer"]
        context["database_driver"] = DRIVERS.get(context["database"], "")
        context["default_database_url"] = default_database_url(context)
        context["kubernetes"] = bool(context.get("kubernetes", True))
        # The HPA keeps two pods where the budget allows it, so one can drain while one serves.
        context["kubernetes_min_replicas"] = min(2, int(context["replicas"]))
        context["worker_pods"], context["worker_processes_per_pod"] = worker_pods(
            context["task_queue"], int(context["queue_workers"]), int(context["web_workers"])
        )
        context["kubernetes_secrets"] = kubernetes_secrets(context)
        context["budget"] = None
        if context["has_pool"]:
            context["budget"] = load_budget_module().compute_budget(
                replicas=context["replicas"],
                web_workers=context["web_workers"],
                queue_workers=context["queue_workers"],
                max_connections=context["db_max_connections"],
                reserved_connections=context["db_reserved_connections"],
            )
