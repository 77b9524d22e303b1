"""On-demand profiling: a request with the right X-Profile-Token gets a pyinstrument profile
instead of its response: HTML, or with X-Profile-Format speedscope JSON or plain text."""

import hmac

from pyinstrument import Profiler
from pyinstrument.renderers import SpeedscopeRenderer
from starlette.responses import Response
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send


class ProfilingMiddleware:
    """Profiles requests whose X-Profile-Token header matches the configured token."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        offered = headers.get(b"x-profile-token")
        if offered is None or not hmac.compare_digest(offered, self.token):
            await self.app(scope, receive, send)
            return

        async def discard(_message: Message) -> None:
            return None

        # A sample every millisecond: fine enough for one request, light enough not to skew it.
        profiler = Profiler(interval=0.001, async_mode="enabled")
        profiler.start()
        try:
            await self.app(scope, receive, discard)
        finally:
            profiler.stop()
        profile_format = headers.get(b"x-profile-format")
        if profile_format == b"speedscope":
            profile = Response(profiler.output(SpeedscopeRenderer()), media_type="application/json")
        elif profile_format == b"text":
            profile = Response(profiler.output_text(color=False), media_type="text/plain")
        else:
            profile = Response(profiler.output_html(), media_type="text/html")
        profile.headers["cache-control"] = "no-store"
        await profile(scope, receive, send)
