"""A cap on the size of request bodies, enforced before anything reads them."""

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

DETAIL = "The body is larger than the service accepts"


class BodySizeLimitMiddleware:
    """Answers 413 to a request whose declared Content-Length is over max_body_bytes, before a
    byte is read, or whose chunked body passes it as it streams in. Without this, a 13 MB body of
    JSON holds a worker's event loop for seconds while it is parsed. Not FastAPI's `max_body_size`:
    it sits outside the service's middleware, so its 413s would have no request id or timing.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The server has checked that a Content-Length is a number; a negative one counts as none.
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await JSONResponse({"detail": DETAIL}, status_code=413)(scope, receive, send)
            return
        received_bytes = 0

        async def receive_counted() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_body_bytes:
                    # Raised where the application reads the body: its exception handling answers
                    # 413 (FastAPI passes an HTTPException on, where another error would be a 400).
                    raise HTTPException(413, DETAIL)
            return message

        await self.app(scope, receive_counted, send)
