"""schemathesis, every check and its stateful phase, against a generated service running on real
servers: one combination per database engine finds no server error and no answer its OpenAPI
document does not describe.

Each combination has a cache and a task queue, so that a request runs the most code: the cache's
read-through and invalidation, a task enqueued on every write. Between them they cover both
caches and three queues, and both brokers. Metrics are left out: they add no route to the schema.

The service runs as `uvicorn` with one worker on a free port, over a database of its own that the
project's migrations build. Examples are capped so that a run takes well under a minute on a
2-core machine; the seed is fixed, so that a failure replays.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from matrix import Combo, full_matrix
from test_generated import PYTHON, project_environment, run, uv_command

if TYPE_CHECKING:
    from conftest import Render

pytestmark = pytest.mark.slow

COMBINATIONS = (
    "postgresql-redis-celery:redis-none",
    "mysql-memory-dramatiq:rabbitmq-none",
    "sqlite-redis-arq-none",
)
MAX_EXAMPLES = 25
SEED = 20261130
STARTUP_SECONDS = 60
RUN_TIMEOUT_SECONDS = 300

# Creates or drops a database with the project's own driver, from the project's environment.
ADMIN_SCRIPT = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

async def main(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
# The database the administrative statements connect to, per engine.
ADMIN_DATABASE = {"postgresql": "postgres", "mysql": "mysql"}


def _combos() -> list[Combo]:
    by_id = {combo.id: combo for combo in full_matrix()}
    return [by_id[combo_id] for combo_id in COMBINATIONS]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _env_example(project: Path) -> dict[str, str]:
    """The settings of the project's .env.example: the local servers' addresses among them."""
    lines = (project / ".env.example").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def migrate(project: Path, environment: dict[str, str], url: str) -> None:
    """The project's migrations, to head, on the database at url."""
    environment = {**environment, "DATABASE_URL": url}
    run(project, "run", "--no-sync", "alembic", "upgrade", "head", environment=environment)


@contextmanager
def own_database(project: Path, database: str, environment: dict[str, str]) -> Iterator[str]:
    """A database URL for this run alone, migrated to head; the database is dropped after."""
    url = environment["DATABASE_URL"]
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{project / 'schemathesis.db'}"
        migrate(project, environment, url)
        yield url
        return
    scheme, _, rest = url.partition("://")
    server = rest.rsplit("/", 1)[0]
    name = f"keel_schemathesis_{uuid.uuid4().hex[:8]}"
    admin = f"{scheme}://{server}/{ADMIN_DATABASE[database]}"

    def administer(statement: str) -> None:
        # With the project's own driver, from the project's environment.
        command = ("run", "--no-sync", "python", "-c", ADMIN_SCRIPT, admin, statement)
        run(project, *command, environment=environment)

    administer(f"CREATE DATABASE {name}")
    url = f"{scheme}://{server}/{name}"
    try:
        migrate(project, environment, url)
        yield url
    finally:
        administer(f"DROP DATABASE {name}" + (" WITH (FORCE)" if database == "postgresql" else ""))


@contextmanager
def serving(project: Path, environment: dict[str, str]) -> Iterator[str]:
    """The generated service under uvicorn on a free port; its URL once /ready answers 200."""
    package = next((project / "src").glob("*/main.py")).parent.name
    port = _free_port()
    log = project / "service.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *uv_command(),
                "run",
                "--no-sync",
                "uvicorn",
                "--factory",
                f"{package}.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=project,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"the service exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{base_url}/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"not ready in time:\n{log.read_text()}"
            time.sleep(0.2)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize("engine_combo", _combos(), ids=lambda combo: combo.id)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    render: Render,
    engine_combo: Combo,
    require_services: Callable[[Combo], None],
    record_property: Callable[[str, object], None],
) -> None:
    require_services(engine_combo)
    project = render(engine_combo.data(python_version=PYTHON))
    run(project, "sync", "--python", PYTHON)
    # .env.example's settings, over whatever the shell holds, and this test's own.
    environment = {
        **project_environment(),
        **_env_example(project),
        "ENVIRONMENT": "development",  # the OpenAPI document is served in development
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REPLICAS": "1",
        "WEB_CONCURRENCY": "1",
        "CACHE_NAMESPACE": f"schemathesis-{uuid.uuid4().hex[:8]}",
        "QUEUE_NAME": f"schemathesis-{uuid.uuid4().hex[:8]}",
    }
    with (
        own_database(project, engine_combo.data()["database"], environment) as database_url,
        serving(project, {**environment, "DATABASE_URL": database_url}) as base_url,
    ):
        started = time.monotonic()
        completed = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{base_url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--no-color",
            ],
            cwd=project,  # where it keeps its cache of failures, out of keel's tree
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
        )
        seconds = time.monotonic() - started
    output = completed.stdout + completed.stderr
    cases = re.search(r"(\d+) generated", output)
    count = int(cases.group(1)) if cases else 0
    record_property("schemathesis_cases", count)
    record_property("schemathesis_seconds", round(seconds, 1))
    print(f"{engine_combo.id}: {count} cases in {seconds:.1f} s")
    assert completed.returncode == 0, output
    assert count > 0, output
