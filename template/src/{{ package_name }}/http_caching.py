"""HTTP caching of reads: ETag, conditional GET with 304, and Cache-Control."""

import hashlib

from starlette.requests import Request
from starlette.responses import Response

NO_STORE = {"cache-control": "no-store"}


def etag_for(body: bytes) -> str:
    """A strong validator derived from the exact bytes of the body."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def is_fresh(request: Request, etag: str) -> bool:
    """Whether the client's If-None-Match already names this representation."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    offered = {candidate.strip().removeprefix("W/") for candidate in header.split(",")}
    return etag in offered


def cacheable_json(request: Request, body: bytes, *, max_age_seconds: int) -> Response:
    """A public JSON read with its ETag, or an empty 304 when the client's copy is current."""
    etag = etag_for(body)
    headers = {"etag": etag, "cache-control": f"public, max-age={max_age_seconds}"}
    if is_fresh(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
