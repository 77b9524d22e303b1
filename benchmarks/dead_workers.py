"""Simulate gunicorn worker restarts in a multiprocess directory, then time /metrics' rendering.

Run with a generated project's Python (benchmarks/metrics_restarts.py does):

    python dead_workers.py PACKAGE DIRECTORY RESTARTS plain|archive

Each restart forks a process that records a realistic worker's samples through the service's own
metrics module (a dozen routes, two statuses each, latencies, cache results, event-loop lag) and
exits; the parent then retires it as gunicorn's child_exit would: `plain` with prometheus_client's
mark_process_dead alone, `archive` with the service's retire_worker. Two more workers are left
as if alive. Prints one JSON line: files, bytes, render times in ms and retire time per worker.
"""

import importlib
import json
import os
import shutil
import statistics
import sys
import time

package, directory, restarts, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
shutil.rmtree(directory, ignore_errors=True)
os.makedirs(directory)
# Before prometheus_client is imported: it picks its storage mode then.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

from prometheus_client import generate_latest, multiprocess  # noqa: E402

metrics = importlib.import_module(f"{package}.infra.metrics")
archive = importlib.import_module(f"{package}.infra.metrics_archive")
server = importlib.import_module(f"{package}.infra.metrics_server")

ROUTES = [
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "<unmatched>"),
    ("GET", "/categories"), ("POST", "/categories"), ("GET", "/products"),
    ("POST", "/products"), ("GET", "/products/feed"), ("GET", "/products/{product_id}"),
    ("PATCH", "/products/{product_id}"), ("DELETE", "/products/{product_id}"),
]  # fmt: skip


def work() -> None:
    """What one worker's life leaves in its files."""
    for method, route in ROUTES:
        for status, seconds in ((200, 0.004), (404, 0.3)):
            metrics.record_request(method, route, status, seconds)
    for result in ("hit", "miss"):
        metrics.CACHE_REQUESTS.labels(result=result).inc()
    metrics.EVENT_LOOP_LAG.observe(0.0005)


def worker() -> int:
    pid = os.fork()
    if pid == 0:
        work()
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


retire_seconds = []
for _ in range(restarts):
    pid = worker()
    started = time.perf_counter()
    if mode == "archive":
        archive.retire_worker(directory, pid)
    else:
        multiprocess.mark_process_dead(pid, directory)
    retire_seconds.append(time.perf_counter() - started)
live = [worker() for _ in range(2)]

render_seconds = []
for _ in range(7):
    started = time.perf_counter()
    body = generate_latest(server.registry_of(directory))
    render_seconds.append(time.perf_counter() - started)
files = [os.path.join(directory, name) for name in os.listdir(directory)]
print(
    json.dumps(
        {
            "restarts": restarts,
            "mode": mode,
            "files": sum(name.endswith(".db") for name in files),
            "bytes": sum(os.path.getsize(name) for name in files),
            "render_ms": 1000 * statistics.median(render_seconds),
            "retire_ms": 1000 * statistics.median(retire_seconds) if retire_seconds else 0.0,
            "exposition_bytes": len(body),
        }
    )
)
