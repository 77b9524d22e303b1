"""Every combination, installed in its own environment with only its declared dependencies, passes
mypy and its own test suite against the real local services.

Each combination renders into its own temporary directory and gets its own `.venv` from
`uv sync`; uv's package cache is shared, which uv makes safe across parallel workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from matrix import Combo

if TYPE_CHECKING:
    from conftest import Render

pytestmark = pytest.mark.slow

PYTHON = "3.11"
STEP_TIMEOUT_SECONDS = 900


def uv_command() -> list[str]:
    """uv on PATH, or the one installed into keel's interpreter (`make bootstrap` via pip)."""
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


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


def run(project: Path, *arguments: str) -> None:
    """Run a uv command in the project; fail the test with its output when it does not exit 0."""
    command = [*uv_command(), *arguments]
    try:
        completed = subprocess.run(
            command,
            cwd=project,
            env=project_environment(),
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


def test_generated_project_passes_mypy_and_its_tests(
    render: Render, combo: Combo, require_services: Callable[[Combo], None], mypy_cache: Path
) -> None:
    require_services(combo)
    project = render(combo.data(python_version=PYTHON))
    run(project, "sync", "--python", PYTHON)
    run(project, "run", "--no-sync", "mypy", "--cache-dir", str(mypy_cache))
    run(project, "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider")
