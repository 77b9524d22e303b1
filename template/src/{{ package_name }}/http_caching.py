"""HTTP caching of reads: ETag, conditional GET with 304, Cache-Control and Vary."""

import hashlib

from fastapi import params
from starlette.requests import Request
from starlette.responses import Response

# CompressMiddleware compresses bodies from this size on, and adds Vary: Accept-Encoding to them.
COMPRESS_MINIMUM_SIZE = 1024


def cache_control(policy: str) -> params.Depends:
    """A route dependency that sends Cache-Control: policy with the route's answers."""

    async def send_policy(response: Response) -> None:
        response.headers["cache-control"] = policy

    return params.Depends(send_policy)


# Answers that change with every write, revalidated on each use; answers no cache may keep.
NO_CACHE = cache_control("no-cache")
NO_STORE = cache_control("no-store")


def cacheable_json(request: Request, body: bytes, *, max_age_seconds: int) -> Response:
    """A public JSON read with its ETag, or an empty 304 when the client's copy is current."""
    # Weak: a strong validator must differ between content codings (RFC 9110, 8.8.3), and
    # CompressMiddleware may send the same body compressed.
    etag = f'W/"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"etag": etag, "cache-control": f"public, max-age={max_age_seconds}"}
    if len(body) < COMPRESS_MINIMUM_SIZE:
        # Shared caches must keep a URL's compressed and plain answers apart; CompressMiddleware
        # names Accept-Encoding in Vary for the larger bodies only.
        headers["vary"] = "Accept-Encoding"
    # If-None-Match compares weakly: W/"x" matches "x".
    offered = request.headers.get("if-none-match", "").split(",")
    if {"*", etag.removeprefix("W/")} & {tag.strip().removeprefix("W/") for tag in offered}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
