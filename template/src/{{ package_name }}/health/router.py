"""GET /health says the process is alive; GET /ready says whether it can serve traffic."""

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter
from fastapi import Request
from fastapi import Response
from pydantic import BaseModel

from ..draining import is_draining

CHECK_TIMEOUT_SECONDS = 2.0

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@dataclass(frozen=True)
class Backend:
    """A server the service talks to, and whether the service can serve at all without it."""

    check: Callable[[], Awaitable[None]]
    is_critical: bool = True


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable", "draining"]
    checks: dict[str, str]


@router.get("/health")
async def health() -> Health:
    """Liveness: answers as long as the event loop does; touches no backend."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    """Readiness: checks every backend at once and names the ones that fail.

    A failing critical backend (the database) makes the service unavailable (503); a failing
    optional one (the cache) leaves it degraded but serving (200). Why a check failed goes to the
    log, not to the response: error text names hosts and ports. Once the server is stopping, it
    is "draining" (503) whatever its backends say.
    """
    response.headers["cache-control"] = "no-store"
    if is_draining():
        response.status_code = 503
        return Readiness(status="draining", checks={})
    backends: dict[str, Backend] = request.app.state.backends
    outcomes = await asyncio.gather(
        *(_outcome(name, backend.check) for name, backend in backends.items())
    )
    results = dict(zip(backends, outcomes, strict=True))
    failing = [backends[name] for name, outcome in results.items() if outcome != "ok"]
    if not failing:
        return Readiness(status="ready", checks=results)
    if not any(backend.is_critical for backend in failing):
        return Readiness(status="degraded", checks=results)
    response.status_code = 503
    return Readiness(status="unavailable", checks=results)


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
