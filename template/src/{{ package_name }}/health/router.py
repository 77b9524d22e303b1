"""GET /health says the process is alive; GET /ready says whether it can serve traffic."""

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter
from fastapi import Request
from fastapi import Response
from pydantic import BaseModel

ReadinessCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


@router.get("/health")
async def health() -> Health:
    """Liveness: answers as long as the event loop does; touches no backend."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    """Readiness: checks every configured backend at once and names the ones that fail."""
    checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
    outcomes = await asyncio.gather(*(_outcome(check) for check in checks.values()))
    results = dict(zip(checks, outcomes, strict=True))
    response.headers["cache-control"] = "no-store"
    if all(outcome == "ok" for outcome in outcomes):
        return Readiness(status="ready", checks=results)
    response.status_code = 503
    return Readiness(status="unavailable", checks=results)


async def _outcome(check: ReadinessCheck) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check()
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # a readiness probe reports any failure instead of raising it
        return f"{type(error).__name__}: {error}"
    return "ok"
