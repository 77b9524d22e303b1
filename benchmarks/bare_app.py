"""The benchmarked service with less middleware, and a plain FastAPI app, for /health.

benchmarks/middleware_overhead.py serves these under the project's own gunicorn.conf.py:
create_app() from a project rendered with metrics=none is the baseline (no middleware, no
metrics); create_app_without_compression() from the metrics=prometheus project shows what the
observability middleware and metrics cost apart from compression; create_app_with_starlette_gzip()
is the same project with Starlette's GZipMiddleware, which keel used until 2026-11-30, in place of
its compression middleware; create_plain_app() is DESIGN's yardstick for /health, a bare app of
the same FastAPI version as a tutorial writes it.
"""

from bench_service.main import create_app as create_service_app
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

# The compression middleware of each keel version: starlette-compress's since 2026-11-30,
# Starlette's before. Found by name, so that an older render (--vcs-ref) works too.
COMPRESSION = frozenset({"CompressMiddleware", "GZipMiddleware"})


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


def create_app_without_compression() -> FastAPI:
    """The service's application without its compression middleware."""
    app = create_service_app()
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls.__name__ not in COMPRESSION]
    return app


def create_app_with_starlette_gzip() -> FastAPI:
    """The service's application with Starlette's GZipMiddleware as its compression, as before."""
    app = create_service_app()
    app.user_middleware[:] = [
        Middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
        if m.cls.__name__ in COMPRESSION
        else m
        for m in app.user_middleware
    ]
    return app
