"""The benchmarked service with less middleware, and a plain FastAPI app, for /health.

benchmarks/middleware_overhead.py serves these under the project's own gunicorn.conf.py:
create_app() from a project rendered with metrics=none is the baseline (no middleware, no
metrics); create_app_without_gzip() from the metrics=prometheus project shows what the
observability middleware and metrics cost apart from Starlette's GZip; create_plain_app() is
DESIGN's yardstick for /health, a bare app of the same FastAPI version as a tutorial writes it.
"""

from bench_service.main import create_app as create_service_app
from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware


def create_app() -> FastAPI:
    """The service's application, routes and lifespan unchanged, with no middleware at all."""
    app = create_service_app()
    # Starlette builds the middleware stack from this list on the first request.
    app.user_middleware.clear()
    return app


def create_plain_app() -> FastAPI:
    """FastAPI() with one GET /health route returning a dict: no middleware, no lifespan."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def create_app_without_gzip() -> FastAPI:
    """The service's application without Starlette's GZipMiddleware."""
    app = create_service_app()
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not GZipMiddleware]
    return app
