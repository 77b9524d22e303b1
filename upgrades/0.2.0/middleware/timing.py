"""Server-Timing: how long the application took until the response started."""

import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send


class ServerTimingMiddleware:
    """Adds `Server-Timing: app;dur=<ms>`, which browsers' developer tools show per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                MutableHeaders(scope=message).append("server-timing", f"app;dur={elapsed_ms:.1f}")
            await send(message)

        await self.app(scope, receive, send_with_timing)
