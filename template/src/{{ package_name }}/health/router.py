"""GET /health says the process is alive; GET /ready says whether it can serve traffic."""

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter
from fastapi import Request
from fastapi import Response
from pydantic import BaseModel

CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"])


@dataclass(frozen=True)
class Backend:
    """A server the service talks to, and whether the service can serve at all without it."""

    check: Callable[[], Awaitable[None]]
    is_critical: bool = True


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    checks: dict[str, str]


@router.get("/health")
async def health() -> Health:
    """Liveness: answers as long as the event loop does; touches no backend."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    """Readiness: checks every backend at once and names the ones that fail.

    A failing critical backend (the database) makes the service unavailable (503); a failing
    optional one (the cache) leaves it degraded but serving (200).
    """
    backends: dict[str, Backend] = request.app.state.backends
    outcomes = await asyncio.gather(*(_outcome(backend.check) for backend in backends.values()))
    results = dict(zip(backends, outcomes, strict=True))
    response.headers["cache-control"] = "no-store"
    failing = [backends[name] for name, outcome in results.items() if outcome != "ok"]
    if not failing:
        return Readiness(status="ready", checks=results)
    if not any(backend.is_critical for backend in failing):
        return Readiness(status="degraded", checks=results)
    response.status_code = 503
    return Readiness(status="unavailable", checks=results)


async def _outcome(check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check()
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # a readiness probe reports any failure instead of raising it
        return f"{type(error).__name__}: {error}"
    return "ok"
