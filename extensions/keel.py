"""Jinja extensions for keel: derived values for the templates and checks for copier.yml."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from copier_template_extensions import ContextHook
from jinja2 import Environment
from jinja2.ext import Extension

BUDGET_MODULE = Path(__file__).parent.parent / "template/src/{{ package_name }}/infra/budget.py"


def load_budget_module() -> ModuleType:
    """Import the generated service's budget module, so render time and run time share one formula."""
    name = "keel_budget"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BUDGET_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
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
    """The budget's refusal as one line, or an empty string when the deployment fits."""
    budget = load_budget_module()
    try:
        budget.compute_budget(
            replicas=int(replicas),
            web_workers=int(web_workers),
            queue_workers=int(queue_workers),
            max_connections=int(max_connections),
            reserved_connections=int(reserved_connections),
            db_cpu_cores=1,
        )
    except (TypeError, ValueError) as error:
        return str(error)
    return ""


class KeelGlobals(Extension):
    """Functions that copier.yml validators call."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["budget_problem"] = budget_problem


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
        context["budget"] = None
        if context["has_pool"]:
            context["budget"] = load_budget_module().compute_budget(
                replicas=context["replicas"],
                web_workers=context["web_workers"],
                queue_workers=context["queue_workers"],
                max_connections=context["db_max_connections"],
                reserved_connections=context["db_reserved_connections"],
                db_cpu_cores=context["db_cpu_cores"],
            )
