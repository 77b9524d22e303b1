"""Real servers for the tests that need one: gunicorn started as production starts it."""

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import outside_project
from tests.helpers import program_environment

GUNICORN_CONFIG = Path(__file__).parent.parent / "gunicorn.conf.py"
STARTUP_SECONDS = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_gunicorn(
    env: Mapping[str, str],
    *,
    metrics_port: int = 0,
    drain_seconds: float = 0,
    arguments: Sequence[str] = (),
) -> Iterator[str]:
    """gunicorn with the project's gunicorn.conf.py, env (the service's settings, with
    WEB_CONCURRENCY its number of workers) and arguments on a free port, serving its metrics on
    127.0.0.1 at metrics_port if not 0; yields its URL once /ready answers 200, then stops it with
    SIGTERM (after drain_seconds: none unless the test is about draining) and checks it shut down
    cleanly."""
    port = free_port()
    variables = {
        **env,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DRAIN_SECONDS": str(drain_seconds),
        # Where a service serves metrics (0: it does not), so that several servers can run at once.
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG), *arguments],
        cwd=outside_project(),
        env=program_environment(variables),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30 + drain_seconds) == 0, "gunicorn did not shut down cleanly"


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited during startup"
        try:
            if httpx.get(f"{base_url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not become ready within {STARTUP_SECONDS} s")
