"""GET /health says the process is alive; GET /ready says whether it can serve traffic."""

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Literal

from fastapi import FastAPI
from fastapi import Response
from pydantic import BaseModel

from ..dependencies import AppResources
from ..draining import is_draining
from ..http_caching import NO_STORE

CHECK_TIMEOUT_SECONDS = 2.0

logger = logging.getLogger(__name__)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable", "draining"]
    checks: dict[str, str]


def add_health_routes(app: FastAPI) -> None:
    """Add GET /health and GET /ready to the application's route table (main.py says why)."""
    app.add_api_route("/health", health, tags=["health"])
    app.add_api_route(
        "/ready",
        ready,
        tags=["health"],
        responses={503: {"model": Readiness}},
        dependencies=[NO_STORE],
    )


async def health() -> Health:
    """Liveness: answers as long as the event loop does; touches no backend."""
    return Health(status="ok")


async def ready(resources: AppResources, response: Response) -> Readiness:
    """Readiness: checks every backend at once; 503 when a critical one fails or when draining."""
    # Why a check failed goes to the log, not to the response: error text names hosts and ports.
    if is_draining():
        response.status_code = 503
        return Readiness(status="draining", checks={})
    checks = resources.readiness_checks
    outcomes = await asyncio.gather(*(_outcome(name, each.check) for name, each in checks.items()))
    results = dict(zip(checks, outcomes, strict=True))
    failing = [checks[name] for name, outcome in results.items() if outcome != "ok"]
    if any(check.is_critical for check in failing):
        response.status_code = 503
        return Readiness(status="unavailable", checks=results)
    return Readiness(status="degraded" if failing else "ready", checks=results)


async def _outcome(name: str, check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check()
    except TimeoutError:
        logger.warning("readiness: %s timed out after %g s", name, CHECK_TIMEOUT_SECONDS)
        return "timed out"
    except Exception as error:  # a readiness probe reports any failure instead of raising it
        detail = " ".join(str(error).split())  # one line, whatever the driver's message
        logger.warning("readiness: %s failed: %s: %s", name, type(error).__name__, detail)
        return "failed"
    return "ok"
