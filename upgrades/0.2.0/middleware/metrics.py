"""Request count and latency, labelled by route template so that ids do not explode the series."""

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

from {{ package_name }}.infra.metrics import HTTP_REQUEST_DURATION
from {{ package_name }}.infra.metrics import HTTP_REQUESTS

# Requests that matched no route (404s, scanners) share one label value.
UNMATCHED = "<unmatched>"


class PrometheusMiddleware:
    """Observes every HTTP request once its response has started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        has_responded = False

        async def send_observed(message: Message) -> None:
            nonlocal has_responded
            if message["type"] == "http.response.start":
                has_responded = True
                # Counted before the response goes out, so a client never sees a response that
                # the metrics do not count yet. The router has stored the matched route by now.
                route = _route_template(scope)
                elapsed = time.perf_counter() - started
                HTTP_REQUEST_DURATION.labels(scope["method"], route).observe(elapsed)
                HTTP_REQUESTS.labels(scope["method"], route, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if not has_responded:  # the application raised; the server error handler answers 500
                HTTP_REQUESTS.labels(scope["method"], _route_template(scope), "500").inc()


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return route.path if isinstance(route, BaseRoute) and hasattr(route, "path") else UNMATCHED
