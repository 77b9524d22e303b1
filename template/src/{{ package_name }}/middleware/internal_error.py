"""The answer to a bug: a 500 in JSON, and one log line naming the request."""

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

logger = logging.getLogger(__name__)


class InternalErrorMiddleware:
    """Turns an exception that nothing handled into a 500 JSON answer and a logged error.

    Starlette's own last-resort handler raises the error again for the server, which writes a bare
    traceback and closes the keep-alive connection; here it is logged in the service's format, with
    the request id, and the connection stays open.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_response_started = False

        async def send_tracked(message: Message) -> None:
            nonlocal has_response_started
            if message["type"] == "http.response.start":
                has_response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if has_response_started:
                # Half a response went out: only closing the connection can tell the client.
                raise
            response = JSONResponse({"detail": "Internal Server Error"}, status_code=500)
            await response(scope, receive, send)
