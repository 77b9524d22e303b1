"""Every combination, installed in its own environment with only its declared dependencies, passes
mypy and its own test suite against the real local services; so do the deployment-size variants
(matrix.VARIANTS, whose docstring says which and why), at sizes other than the defaults.

Each combination renders into its own temporary directory and gets its own `.venv` from
`uv sync`; uv's package cache is shared, which uv makes safe across parallel workers.

The generated tests marked `slow` start, kill and restart real processes (gunicorn under load,
queue workers killed mid-task, a private database restarted, a broker cut off): seconds each.
They run in the combinations of matrix.heavy_matrix(), which together answer every two axes in
every way the matrix does, and in every deployment-size variant; every other combination runs
the rest of its suite (`-m "not slow"`).

Each suite runs as a user runs it after the README's steps: with `.env` copied from `.env.example`
(LOG_FORMAT=text, ENVIRONMENT=development, the rendered sizes), and in a shell that holds settings
for running the service (HOSTILE_ENVIRONMENT). A generated test takes its settings from itself
alone, so neither may change an outcome.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from matrix import Combo, deployment_variants, heavy_matrix

if TYPE_CHECKING:
    from conftest import Render

pytestmark = pytest.mark.slow

PYTHON = "3.11"
STEP_TIMEOUT_SECONDS = 900

# What a developer's shell may hold for running the service, each value wrong for its tests: other
# sizes, text logs, production, servers that do not answer, a metrics directory that does not
# exist, gunicorn arguments. The tests' own variables (REQUIRE_SERVICES, TEST_*) are not among them.
HOSTILE_ENVIRONMENT = {
    "ENVIRONMENT": "production",
    "LOG_LEVEL": "DEBUG",
    "LOG_FORMAT": "text",
    "HOST": "192.0.2.1",
    "PORT": "1",
    "REPLICAS": "3",
    "WEB_CONCURRENCY": "7",
    "QUEUE_WORKERS": "9",
    "DB_MAX_CONNECTIONS": "5",
    "DB_RESERVED_CONNECTIONS": "4",
    "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/elsewhere",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "RABBITMQ_URL": "amqp://nobody:nothing@127.0.0.1:1/%2F",
    "CACHE_NAMESPACE": "hostile",
    "QUEUE_NAME": "hostile",
    "PROMETHEUS_MULTIPROC_DIR": "/nonexistent",
    "QUEUE_METRICS_DIR": "/nonexistent",
    "QUEUE_METRICS_PORT": "1",
    "PROFILING_TOKEN": "short",
    "GUNICORN_CMD_ARGS": "--workers 9 --bind 192.0.2.1:1",
}


def uv_command() -> list[str]:
    """The uv that runs this suite (`uv run` names itself in UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        pytest.fail("no uv: run the suite with `make test` (or `uv run pytest`)")
    return [found]


def project_environment() -> dict[str, str]:
    """The environment for the generated project's tools, free of keel's own and pytest's state."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PYTEST_")  # xdist's worker ids are not the project's
        and name not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME"}
        # Each generated suite starts a few dozen interpreters (gunicorn and its workers, queue
        # workers), all importing the same libraries from a fresh .venv. Without bytecode files
        # every one of them compiles those again: a Celery combination's suite took 30 s of CPU
        # instead of 13 s. CI's machine sets this variable.
        and name != "PYTHONDONTWRITEBYTECODE"
    }
    # Never fetch an interpreter: the machine's own 3.11 is what CI has too.
    environment["UV_PYTHON_DOWNLOADS"] = "never"
    # The generated tests skip a test whose server is down unless REQUIRE_SERVICES=1.
    if os.environ.get("KEEL_REQUIRE_SERVICES") == "1":
        environment["REQUIRE_SERVICES"] = "1"
    return environment


def run(project: Path, *arguments: str, environment: dict[str, str] | None = None) -> None:
    """Run a uv command in the project; fail the test with its output when it does not exit 0."""
    command = [*uv_command(), *arguments]
    try:
        completed = subprocess.run(
            command,
            cwd=project,
            env=environment or project_environment(),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"`{' '.join(arguments)}` timed out after {error.timeout} s:\n{error.output}")
    if completed.returncode != 0:
        pytest.fail(
            f"`uv {' '.join(arguments)}` exited {completed.returncode} in {project}:\n"
            f"{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One mypy cache per pytest-xdist worker, shared by the combinations it checks in turn.

    Most of mypy's time goes into the libraries (SQLAlchemy, pydantic, FastAPI), which every
    combination installs from uv's cache as the same files. mypy's incremental mode re-checks
    whatever differs (the project's modules, another library version) and reuses the rest:
    measured 10 s of CPU for a cold cache against 1 s for the next combination.
    """
    return tmp_path_factory.getbasetemp() / f"mypy-cache-{worker_id}"


def check(project: Path, mypy_cache: Path, *, with_slow_tests: bool = True) -> None:
    """Install the project, run mypy, and run its tests as a user does after the README's steps;
    its slow tests too, unless with_slow_tests is false."""
    run(project, "sync", "--python", PYTHON)
    run(project, "run", "--no-sync", "mypy", "--cache-dir", str(mypy_cache))
    shutil.copy(project / ".env.example", project / ".env")
    run(
        project,
        "run",
        "--no-sync",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *([] if with_slow_tests else ["-m", "not slow"]),
        environment={**project_environment(), **HOSTILE_ENVIRONMENT},
    )


def test_generated_project_passes_mypy_and_its_tests(
    render: Render, combo: Combo, require_services: Callable[[Combo], None], mypy_cache: Path
) -> None:
    require_services(combo)
    check(
        render(combo.data(python_version=PYTHON)),
        mypy_cache,
        with_slow_tests=combo in heavy_matrix(),
    )


@pytest.mark.parametrize("variant", deployment_variants(), ids=lambda variant: variant.id)
def test_deployment_size_variant_passes_mypy_and_its_tests(
    render: Render, variant: Combo, require_services: Callable[[Combo], None], mypy_cache: Path
) -> None:
    require_services(variant)
    check(render(variant.data(python_version=PYTHON)), mypy_cache)
