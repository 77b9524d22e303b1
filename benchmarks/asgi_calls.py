"""The middleware stack's cost per request in-process: the ASGI app called directly, no server.

Run with a generated project's Python (benchmarks/middleware_overhead.py does):

    python asgi_calls.py PACKAGE PATH REQUESTS

Builds the service's application four ways (full; with Starlette's GZip as its compression, as
until 2026-11-30; without compression; without any middleware), and a plain FastAPI app with one
/health route (bare_app.py's), and calls each with a GET request REQUESTS times in a row, on
uvloop, in production settings with
PROMETHEUS_MULTIPROC_DIR set as under gunicorn. Repeats that five times, the stacks taking
turns, and prints one JSON line: the least CPU microseconds per request of each. With no
network, no server and no other process in the way, these figures vary far less than req/s
when the machine is shared.
"""

import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

package, path, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Before prometheus_client is imported: it picks its storage mode then.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="keel-asgi-calls-")
os.environ["ENVIRONMENT"] = "production"

import uvloop  # noqa: E402

create_app = importlib.import_module(f"{package}.main").create_app
sys.path.insert(0, str(Path(__file__).resolve().parent))
bare_app = importlib.import_module("bare_app")

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": path,
    "raw_path": path.encode(),
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"asgi_calls")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(_message: dict[str, Any]) -> None:
    return None


def stacks() -> dict[str, Any]:
    bare = create_app()
    bare.user_middleware.clear()
    return {
        "full": create_app(),
        "Starlette GZip": bare_app.create_app_with_starlette_gzip(),
        "no compression": bare_app.create_app_without_compression(),
        "bare": bare,
        "plain FastAPI": bare_app.create_plain_app(),
    }


async def main() -> None:
    apps = stacks()
    best = {name: float("inf") for name in apps}
    for app in apps.values():  # warm-up: builds each middleware stack
        for _ in range(1000):
            await app(dict(SCOPE), receive, send)
    for _ in range(5):
        for name, app in apps.items():
            # CPU time of this process: time the scheduler gave to others does not count.
            started = time.process_time()
            for _ in range(requests):
                await app(dict(SCOPE), receive, send)
            best[name] = min(best[name], (time.process_time() - started) / requests * 1e6)
    print(json.dumps(best))


uvloop.run(main())
